"""Install emotion2vec_plugin: the fairseq user-dir plugin, its manifest tools and probe scripts."""

from setuptools import find_packages, setup

setup(
    name="emotion2vec_plugin",
    version="0.1.0",
    description="emotion2vec pretraining (data2vec 2.0 self-distillation for speech emotion) as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["emotion2vec_plugin", "emotion2vec_plugin.*", "manifests", "manifests.*"]),
    # fairseq is required but not pinned here: either ve-fairseq or fairseq-fixed provides the
    # `fairseq` module, and pip cannot express "one of". The README's set-up installs ve-fairseq.
    install_requires=[
        "torch>=2.1",
        "torchaudio>=2.1",
        "soundfile>=0.12",
        "numpy",
        "sentencepiece",
        "tqdm",
        "tensorboardX",
        "scikit-learn",
        "scipy",
        "matplotlib",
        "safetensors",
        "pyyaml",
        "av>=12",  # PyAV: FFmpeg inside its wheel, decodes MELD's mp4 and MEAD's m4a
        "h5py",  # CMU-MOSEI's labels (.csd) are HDF5
        # e2v-export --format onnx (TorchScript exporter, no onnxscript needed) and its runner
        "onnx>=1.16",
        "onnxruntime>=1.18",
    ],
    extras_require={"test": ["pytest", "pytest-xdist"]},
    entry_points={
        "console_scripts": [
            "e2v-manifest = manifests.audio_manifest:cli_main",
            "e2v-validate-manifest = manifests.validate:cli_main",
            "e2v-labels = manifests.labels:cli_main",
            "e2v-split-labels = manifests.split_labels:cli_main",
            "e2v-probe = emotion2vec_plugin.evaluation.probe_cli:cli_main",
            "e2v-curves = emotion2vec_plugin.evaluation.curves_cli:cli_main",
            "e2v-benchmark = emotion2vec_plugin.evaluation.benchmark:cli_main",
            "e2v-export = emotion2vec_plugin.formats.export_cli:cli_main",
            "e2v-extract = emotion2vec_plugin.inference.extract_cli:cli_main",
            "e2v-predict = emotion2vec_plugin.inference.predict_cli:cli_main",
            "e2v-demo-corpus = emotion2vec_plugin.demo.corpus:cli_main",
            "e2v-demo-report = emotion2vec_plugin.demo.report:cli_main",
            "e2v-synth-corpus = manifests.synth_corpus:cli_main",
        ]
    },
)
