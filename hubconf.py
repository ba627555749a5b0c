"""torch.hub entry points: ``torch.hub.load("<repo or path>", "shufflenet_v1_x1_0_g3", source="local")``.

Every registered name (``shufflenet.list_models()``) is an entry point with the same keyword arguments as
``shufflenet.create_model`` (``num_classes``, ``weights=<file>``, the ShuffleNetV1 options). No weights are
downloaded: pass a converted or trained weights file.
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
        if pretrained:
            raise ValueError(f"{name}: no weights can be downloaded; pass weights=<file> (see README)")
        return create_model(name, **kwargs)

    entry.__name__ = name
    entry.__doc__ = f"{name} (shufflenet.create_model({name!r}, **kwargs))"
    return entry


for _name in list_models():
    globals()[_name] = _entry(_name)
del _name
