"""torch.hub entry points: ``torch.hub.load("<repo or path>", "shufflenet_v1_x1_0_g3", weights="DEFAULT")``.

Every registered name (``shufflenet.list_models()``) is an entry point with the keyword arguments of
``shufflenet.create_model``: ``weights=`` published weights (``"DEFAULT"``, ``"IMAGENET1K_MMPRETRAIN"``; downloaded
once into torch.hub's cache, converted and cached) or a weights file; ``pretrained=True`` means
``weights="DEFAULT"``; ``num_classes`` and the ShuffleNetV1 options.
"""

import os
import sys

dependencies = ["torch", "torchvision", "timm"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:  # a hub checkout that was not pip-installed
    sys.path.insert(0, _SRC)

from shufflenet import create_model, list_models  # noqa: E402


def _entry(name):
    def entry(pretrained=False, **kwargs):
        if pretrained and kwargs.get("weights") is None:
            kwargs["weights"] = "DEFAULT"
        return create_model(name, **kwargs)

    entry.__name__ = name
    entry.__doc__ = f"{name} (shufflenet.create_model({name!r}, **kwargs); pretrained=True: weights='DEFAULT')"
    return entry


for _name in list_models():
    globals()[_name] = _entry(_name)
del _name
