"""cifar_lib: a CIFAR-10 study kit built around the coursework's intermediate blocks."""
__version__ = "0.1.0"

from .blocks import FusedIntermediateBlock, IntermediateBlock, OutputBlock  # noqa: E402,F401
from .models import BasicNet, ImprovedNet, build_model, count_flops, count_parameters  # noqa: E402,F401
