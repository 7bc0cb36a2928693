"""Distribution `prompt-tuning`: prompt learning on frozen T5 / decoder-only models in JAX/Flax."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.4.30",
    "jaxlib>=0.4.30",
    "flax>=0.10",
    "optax>=0.2.3",
    "orbax-checkpoint>=0.6",
    "tensorstore>=0.1.60",
    "seqio>=0.0.19",
    # seqio needs tensorflow-text, which requires `tensorflow` itself: asking for tensorflow-cpu
    # as well would install a second copy of TensorFlow over the first (same files).
    "tensorflow>=2.16",
    "tensorflow-datasets>=4.9.6",
    "gin-config>=0.5.0",
    "sentencepiece>=0.2.0",
    "clu>=0.0.12",
    "tensorboard>=2.16",
    "numpy>=1.26",
    "absl-py>=2.0",
    "msgpack>=1.0",
    "safetensors>=0.4",
    "gguf>=0.17",
    "tokenizers>=0.20",
    "scipy>=1.11",
    "scikit-learn>=1.3",
]

EXTRAS_REQUIRE = {
    # pytest-xdist: the suite runs on every core (`-n auto`), ~1.5x faster on 2 cores.
    "test": ["pytest>=8", "pytest-xdist>=3.5"],
    "gpu": ["jax[cuda12]"],
    "tools": ["torch==2.13.0", "transformers>=5.0", "peft==0.21.2", "sentencepiece>=0.2.0"],
}

setup(
    name="prompt-tuning",
    version="0.1.0",
    description="Parameter-efficient prompt learning (prompt tuning, P-tuning, prefix tuning) on frozen T5 models in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `configs/` lives at the top of the checkout (where T5X users look for it) and is installed as
    # `prompt_tuning/configs/`, so gin files resolve from a non-editable install too.
    packages=find_packages(include=["prompt_tuning", "prompt_tuning.*"]) + ["prompt_tuning.configs"],
    package_dir={"prompt_tuning.configs": "configs"},
    package_data={"prompt_tuning": ["assets/**/*"], "prompt_tuning.configs": ["*.gin", "**/*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "prompt-tuning-demo=prompt_tuning.demo:main",
            "prompt-tuning-train=prompt_tuning.train.__main__:main",
            "prompt-tuning-eval=prompt_tuning.eval:main",
            "prompt-tuning-infer=prompt_tuning.infer:main",
            "prompt-tuning-extract-variable=prompt_tuning.scripts.extract_variable:main",
            "prompt-tuning-find-module=prompt_tuning.scripts.find_module:main",
            "prompt-tuning-diff-checkpoints=prompt_tuning.scripts.diff_checkpoints:main",
            "prompt-tuning-convert-checkpoint=prompt_tuning.scripts.convert_checkpoint:main",
            "prompt-tuning-fetch-assets=prompt_tuning.scripts.fetch_assets:main",
            "prompt-tuning-export-peft-adapter=prompt_tuning.scripts.export_peft_adapter:main",
            "prompt-tuning-import-peft-adapter=prompt_tuning.scripts.import_peft_adapter:main",
            "prompt-tuning-plot-metrics=prompt_tuning.scripts.plot_metrics:main",
        ],
    },
    license="Apache-2.0",
)
