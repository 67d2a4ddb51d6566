"""Helpers every op's Python entry shares."""
import operator

import torch

ACTIVATIONS = ("scaled_tanh", "tanh", "relu", "identity")


def _index(value):
    """value as an int: Python and numpy ints, SymInts; a bool or a float raises
    TypeError (the op's schema would take a bool as 0 or 1, int() would
    truncate 2.7 to 2)."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, torch.SymInt):
        return value
    return operator.index(value)


def pair(value, name):
    """An int or a pair of ints, as torch.nn.functional takes stride/padding."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    try:
        return [_index(a), _index(b)]
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None


def check_int(op, value, name):
    """An int argument (numpy ints too), not a bool or a float."""
    try:
        return _index(value)
    except TypeError:
        raise TypeError(f"{op}: expected {name} to be an int, got {value!r}") from None


def check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def check_devices(op, input, **others):
    """Fake kernels run without the C++ checks: keep the device rule there too."""
    for name, t in others.items():
        if t is not None and t.device != input.device:
            raise ValueError(
                f"{op}: expected {name} to be on the device of input ({input.device}), got {t.device}"
            )


def empty_grad(like):
    """What a backward op returns for a grad its output_mask did not ask for."""
    return like.new_empty((0,))
