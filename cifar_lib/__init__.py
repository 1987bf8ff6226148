"""cifar_lib: a CIFAR-10 study kit built around the coursework's intermediate blocks."""
__version__ = "0.1.0"

# The networks, importable from the package itself; loaded on first use, so that the
# torch-free modules (paths, sweeps) import without torch.
_EXPORTS = {"FusedIntermediateBlock": "blocks", "IntermediateBlock": "blocks", "OutputBlock": "blocks",
            "BasicNet": "models", "ImprovedNet": "models", "DeepNet": "models", "FastNet": "models",
            "build_model": "models", "count_flops": "models", "count_trainable_parameters": "models"}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cifar_lib' has no attribute {name!r}")
