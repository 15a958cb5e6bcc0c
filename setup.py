"""tf_awt: Adversarial Winning Tickets for TensorFlow/Keras (tf_keras + tfmot)."""
from setuptools import find_packages, setup

setup(
    name="tf_awt",
    version="0.1.0",
    description=(
        "Adversarially robust sparse networks found at initialization "
        "(Adversarial Winning Tickets, AISTATS 2022) for tf_keras / tfmot."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_awt", "tf_awt.*"]),
    package_data={"tf_awt": ["recipes/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.*",
        "tf-keras==2.21.*",
        "tensorflow-model-optimization==0.8.*",
        "tensorboard>=2.21",
        "cleverhans==4.0.0",
        "mlflow>=3,<4",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets' download code imports it (an etils extra it does not declare)
        "mlxtend>=0.23",
        "numpy",
        "pyyaml",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # the optional AutoAttack evaluation suite (tf_awt.adversarial.autoattack); ART's AutoAttack imports multiprocess
        "autoattack": ["adversarial-robustness-toolbox>=1.17", "multiprocess"],
        # sweeps whose cells run in parallel, locally or on a cluster (tf-awt sweep --workers N / --address)
        "ray": ["ray>=2.9"],
        "dev": ["pytest>=8", "pytest-timeout", "pytest-xdist>=3.5", "hypothesis>=6", "adversarial-robustness-toolbox>=1.17", "multiprocess",
                "scipy",  # the float64 LP that FAB-T's projection is tested against (also a scikit-learn dependency)
                "ray>=2.9"],
    },
    entry_points={"console_scripts": ["tf-awt=tf_awt.running.cli:main"]},
)
