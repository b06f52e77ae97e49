from setuptools import find_packages, setup

setup(
    name="minienc",
    version="0.1.0",
    description="A minimal NumPy/CuPy library for training encoders, written to be read",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["minienc", "minienc.*"]),
    # tqdm: the progress bar (a widget in notebooks, plain lines in logs); small, pure Python
    install_requires=["numpy>=1.24", "tqdm>=4.60"],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        # safetensors: only to check minienc's own writer and reader against the package's files
        "test": ["pytest>=7", "hypothesis>=6.80", "safetensors>=0.4"],
        # scikit-learn is used only for the 1,797 real digits it ships inside its package (no download)
        # threadpoolctl caps the host BLAS threads (see minienc.tuning.set_blas_threads)
        "demos": ["matplotlib>=3.7", "scikit-learn>=1.3", "threadpoolctl>=3"],
        # --data folder:PATH decodes PNG, JPEG, ... with Pillow (a codec per format is no job to
        # write again); 9.1 for Image.Resampling
        "images": ["pillow>=9.1"],
        # minienc.distributed: mpi4py over MPICH's PyPI wheel (mpiexec included), so pip is enough
        "distributed": ["mpi4py>=4.0", "mpich"],
    },
)
