"""Bernoulli dropout noise from torch's CPU generator, drawn by a C kernel: same values, faster.

On CPU, ``F.dropout`` draws its Bernoulli mask one element at a time from torch's generator, a
Mersenne Twister (MT19937): about 8 ns per element, serial whatever the thread count. A base
training step (clone_batch 8, 2 x 4 s) has about 62 M dropout elements, so about 0.5 s of every
step is one core drawing random numbers while the other waits. :func:`bernoulli_noise` makes the
*same* noise tensor as ``F.dropout`` does (the same draws from the same generator, which it leaves
in the same state, and the same arithmetic) with the draws made by a small C kernel that the
compiler vectorises: 2.1 ms instead of 19.3 ms for 2.3 M elements (1 thread, this project's CPU).
``modules/dropout.py`` (the math) multiplies its input by this noise.

How torch draws (ATen's CPU ``bernoulli_(1 - p)`` inside ``dropout``): each element takes one
64-bit draw made of two 32-bit MT19937 outputs (the first is the high word); with
``u = (draw & (2**53 - 1)) * 2**-53`` the element is kept iff ``u < 1 - p``; then
``noise = keep.div_(1 - p)`` in the input's dtype and ``out = x * noise`` (autograd saves ``noise``).

The kernel is compiled with the system C compiler (``$CC``, ``cc`` or ``gcc``) at first use into a
per-user cache (``$XDG_CACHE_HOME/emotion2vec_plugin`` or ``~/.cache/emotion2vec_plugin``) and
loaded with ctypes; when loaded it must reproduce torch's ``bernoulli_`` and generator state on a
private generator for several lengths and rates. Without a compiler, on other devices, under
``torch.compile``, when that check fails, or with ``E2V_FAST_DROPOUT=0``, :func:`fast_path` is
false and the caller uses ``F.dropout``.
"""

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

logger = logging.getLogger(__name__)

# torch.Generator.get_state() of a CPU generator (ATen CPUGeneratorImplState): int64 initial seed,
# int32 left, int32 seeded, uint64 next, uint64 state[624] (one 32-bit word each), normal caches
STATE_BYTES = 5056
LEFT_OFFSET, NEXT_OFFSET, WORDS_OFFSET = 8, 16, 24
# below this many elements F.dropout is as fast (the kernel call costs about 20 us more: state copies)
MIN_ELEMENTS = 4096

_SOURCE = r"""
#include <stdint.h>
#define MT_N 624
#define MT_M 397
#if defined(__x86_64__) && defined(__GNUC__)
#define E2V_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define E2V_CLONES
#endif

static inline __attribute__((always_inline)) uint32_t mix(uint32_t u, uint32_t v) {
  uint32_t y = (u & 0x80000000u) | (v & 0x7fffffffu);
  return (y >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

/* the MT19937 state transition, as ATen's mt19937::next_state */
static inline __attribute__((always_inline)) void twist(uint32_t *s) {
  int k;
  for (k = 0; k < MT_N - MT_M; k++) s[k] = s[k + MT_M] ^ mix(s[k], s[k + 1]);
  for (; k < MT_N - 1; k++) s[k] = s[k + MT_M - MT_N] ^ mix(s[k], s[k + 1]);
  s[MT_N - 1] = s[MT_M - 1] ^ mix(s[MT_N - 1], s[0]);
}

/* tempered outputs of the whole state block */
static inline __attribute__((always_inline)) void temper(const uint32_t *s, uint32_t *t) {
  for (int k = 0; k < MT_N; k++) {
    uint32_t y = s[k];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    t[k] = y;
  }
}

/* n Bernoulli draws: out[i] = keep_value if kept else 0. words/left/next: the generator's state
   (updated in place), read one output at a time the way ATen's mt19937::operator() does:
   "if (--left == 0) next_state(); return temper(state[next++]);" */
E2V_CLONES void e2v_bernoulli_noise(uint64_t *words, int32_t *left, uint64_t *next, int64_t n,
                                    uint64_t threshold, float keep_value, float *out) {
  uint32_t s[MT_N], t[MT_N];
  for (int k = 0; k < MT_N; k++) s[k] = (uint32_t)words[k];
  int32_t l = *left;
  uint32_t nx = (uint32_t)*next;
  temper(s, t);
  int64_t i = 0;
  while (i < n) {
    int64_t pairs = (l - 1) / 2; /* whole draws readable before the next state transition */
    if (pairs > n - i) pairs = n - i;
    if (pairs > 0) {
      const uint32_t *src = t + nx;
      float *dst = out + i;
      for (int64_t j = 0; j < pairs; j++) {
        uint64_t draw = ((uint64_t)(src[2 * j] & 0x1fffffu) << 32) | src[2 * j + 1];
        dst[j] = draw < threshold ? keep_value : 0.0f;
      }
      i += pairs;
      nx += 2 * pairs;
      l -= 2 * pairs;
      continue;
    }
    uint32_t hi, lo;
    if (--l == 0) { twist(s); temper(s, t); l = MT_N; nx = 0; }
    hi = t[nx++];
    if (--l == 0) { twist(s); temper(s, t); l = MT_N; nx = 0; }
    lo = t[nx++];
    uint64_t draw = ((uint64_t)(hi & 0x1fffffu) << 32) | lo;
    out[i++] = draw < threshold ? keep_value : 0.0f;
  }
  for (int k = 0; k < MT_N; k++) words[k] = s[k];
  *left = l;
  *next = nx;
}
"""

_lock = threading.Lock()
_kernel: Optional[ctypes.CDLL] = None
_kernel_tried = False
_enabled = os.environ.get("E2V_FAST_DROPOUT", "1") != "0"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emotion2vec_plugin"


def _compile(cc: str, flags: list) -> Path:
    """Compile the kernel once per (source, compiler, flags, machine); concurrent processes
    (DDP ranks) each write a temp file and rename it into place."""
    key = hashlib.sha256("\0".join([_SOURCE, cc, *flags, platform.machine()]).encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    target = out_dir / f"bernoulli_{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        src = Path(tmp) / "bernoulli.c"
        src.write_text(_SOURCE)
        built = Path(tmp) / "bernoulli.so"
        subprocess.run([cc, *flags, "-o", str(built), str(src)], check=True, capture_output=True, text=True)
        os.replace(built, target)
    return target


def _load() -> Optional[ctypes.CDLL]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        logger.info("no C compiler found: dropout uses torch's per-element CPU generator (slower, same values)")
        return None
    try:
        lib = ctypes.CDLL(str(_compile(cc, ["-O3", "-shared", "-fPIC"])))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        logger.warning("could not build the dropout kernel with %s (%s): using F.dropout (slower, same values)",
                       cc, detail.strip()[:300])
        return None
    fn = lib.e2v_bernoulli_noise
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64,
                   ctypes.c_float, ctypes.c_void_p]
    return lib


def _noise(lib: ctypes.CDLL, shape: torch.Size, p: float, dtype: torch.dtype,
           generator: torch.Generator) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype).bernoulli_(1 - p, generator=generator).div_(1 - p)``, equal
    values and equal generator state afterwards."""
    q = 1 - p
    # u = k * 2**-53 < q  <=>  k < q * 2**53 (exact: a power-of-two scaling)  <=>  k < ceil(q * 2**53)
    threshold = math.ceil(q * 2.0**53)
    fp32 = dtype == torch.float32
    # the kept value as torch computes it: 1 / (1 - p) in the noise dtype
    keep_value = float(torch.ones((), dtype=torch.float32).div_(q)) if fp32 else 1.0
    out = torch.empty(shape, dtype=torch.float32)
    with _lock:
        state = generator.get_state()
        if state.numel() != STATE_BYTES:
            raise RuntimeError(f"CPU generator state has {state.numel()} bytes, expected {STATE_BYTES}")
        base = state.data_ptr()
        lib.e2v_bernoulli_noise(base + WORDS_OFFSET, base + LEFT_OFFSET, base + NEXT_OFFSET, out.numel(),
                                threshold, keep_value, out.data_ptr())
        generator.set_state(state)
    return out if fp32 else out.to(dtype).div_(q)


def _self_check(lib: ctypes.CDLL) -> bool:
    """The kernel reproduces torch's ``bernoulli_`` values and generator state (private generator)."""
    gen = torch.Generator()
    for p, n, skip, dtype in [(0.1, 1, 0, torch.float32), (0.1, 623, 1, torch.float32), (0.5, 1249, 3, torch.float32),
                              (0.9, 5000, 2, torch.float32), (0.3, 777, 5, torch.bfloat16)]:
        gen.manual_seed(1234 + n)
        torch.rand(skip, generator=gen)  # start inside a state block, at odd and even word offsets
        ours = _noise(lib, torch.Size([n]), p, dtype, gen)
        after = torch.rand(3, generator=gen)
        gen.manual_seed(1234 + n)
        torch.rand(skip, generator=gen)
        ref = torch.empty(n, dtype=dtype).bernoulli_(1 - p, generator=gen).div_(1 - p)
        if not (torch.equal(ours, ref) and torch.equal(after, torch.rand(3, generator=gen))):
            return False
    return True


def kernel() -> Optional[ctypes.CDLL]:
    """The checked C kernel, or None (not built, or it does not reproduce torch's draws)."""
    global _kernel, _kernel_tried
    if not _kernel_tried:
        _kernel_tried = True
        lib = _load()
        if lib is not None and not _self_check(lib):
            logger.warning("the dropout kernel does not reproduce this torch's bernoulli_ draws: using F.dropout")
            lib = None
        _kernel = lib
    return _kernel


def fast_path(x: torch.Tensor) -> bool:
    """Whether dropout on ``x`` runs the C kernel (CPU tensor of at least ``MIN_ELEMENTS``,
    enabled, built, not compiling)."""
    return (_enabled and x.device.type == "cpu" and x.numel() >= MIN_ELEMENTS
            and not torch.compiler.is_compiling() and kernel() is not None)


@contextmanager
def torch_dropout() -> Iterator[None]:
    """Within the block, ``modules/dropout.py``'s dropout is ``F.dropout`` and attention uses SDPA's own dropout
    (the computation before this module; the equivalence test and ``--baseline`` compare against it)."""
    global _enabled
    saved = _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = saved


def bernoulli_noise(shape: torch.Size, p: float, dtype: torch.dtype,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The dropout noise of ``F.dropout`` (kept: ``1 / (1 - p)``, dropped: 0) of ``shape``, drawn
    from ``generator`` (default: torch's default CPU generator) by the checked kernel; call only
    where :func:`fast_path` holds."""
    return _noise(kernel(), shape, p, dtype, torch.default_generator if generator is None else generator)
