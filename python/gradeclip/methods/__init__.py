"""Explanation methods: Grad-ECLIP and (one module each) the baselines it is compared with."""

from .base import MethodInfo, MethodOutput
from .registry import get_method, methods

__all__ = ["MethodInfo", "MethodOutput", "get_method", "methods"]
