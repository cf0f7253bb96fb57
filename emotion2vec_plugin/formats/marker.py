"""How an export folder declares its format: a :class:`FolderMarker`, and reading the config file holding it."""

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict

from ..checkpoint.model_record import ExportFormatError


def _parse_yaml(f) -> Any:
    import yaml

    try:
        return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(" ".join(str(e).split())) from None


PARSERS: Dict[str, Callable[[Any], Any]] = {"JSON": json.load, "YAML": _parse_yaml}


def read_config(cfg_path: str, kind: str) -> Dict[str, Any]:
    """The ``kind`` ("JSON" or "YAML") mapping in ``cfg_path``; unreadable text or syntax is an error naming the file."""
    try:
        with open(cfg_path, encoding="utf-8") as f:
            conf = PARSERS[kind](f)
    except UnicodeDecodeError as e:
        raise ExportFormatError(f"{cfg_path}: not UTF-8 text (byte {e.start}: {e.reason}); expected the {kind} file "
                                f"e2v-export writes") from None
    except ValueError as e:  # json.JSONDecodeError and yaml.YAMLError (re-raised above) name line and column
        raise ExportFormatError(f"{cfg_path}: not valid {kind} ({e}); re-export or restore the file") from None
    if not isinstance(conf, dict):
        raise ExportFormatError(f"{cfg_path}: expected a {kind} mapping at the top, got {type(conf).__name__}")
    return conf


@dataclass(frozen=True)
class FolderMarker:
    """A folder of a format says so: its ``file`` (a ``kind`` config) holds ``key: value`` at the top.

    ``label`` names the format in messages ("plugin export", "FunASR")."""

    file: str
    kind: str
    key: str
    value: str
    label: str

    def present(self, folder: str) -> bool:
        return os.path.isfile(os.path.join(folder, self.file))

    def read(self, folder: str) -> Dict[str, Any]:
        return read_config(os.path.join(folder, self.file), self.kind)

    def matches(self, folder: str) -> bool:
        return self.present(folder) and self.read(folder).get(self.key) == self.value
