"""Model providers behind one async seam."""

from judge.providers._base import ModelOutput, Provider, Usage
from judge.providers.registry import default_judge, get_provider

__all__ = ["ModelOutput", "Provider", "Usage", "default_judge", "get_provider"]
