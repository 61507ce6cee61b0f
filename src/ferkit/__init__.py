"""ferkit: facial expression recognition — detect, align, classify, train, evaluate, explain.

    from ferkit import Recognizer
    result = Recognizer().analyze("photo.jpg")
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ferkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"


def __getattr__(name: str):
    """Import the heavy API lazily, so `import ferkit` (and the CLI's --help) stay fast."""
    if name == "Recognizer":
        from ferkit.recognizer import Recognizer

        return Recognizer
    if name == "load_classifier":
        from ferkit.classify import load_classifier

        return load_classifier
    if name in ("Face", "ImageResult"):
        from ferkit import results

        return getattr(results, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")


__all__ = ["Face", "ImageResult", "Recognizer", "__version__", "load_classifier"]
