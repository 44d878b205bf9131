"""Stand-in for ``slicer.parameterNodeWrapper`` (Slicer's Base/Python, absent from slicer-core).

Same surface as the real one for what the module uses: ``@parameterNodeWrapper`` on a class with
annotated fields (``str``, ``int``, ``float``, ``bool``, ``pathlib.Path``, MRML node classes, and
``Annotated[..., Default(..), WithinRange(..), Choice(..), Minimum(..)]``). Values live in a real
``vtkMRMLScriptedModuleNode``: plain values as string parameters, nodes as node references (role =
field name), so they are saved with the scene. Setting a value outside ``WithinRange`` / ``Choice``
raises ``ValueError`` as the real validators do. ``connectGui`` / ``disconnectGui`` exist but do nothing
here (no widgets headless); :data:`FIELDS_ATTRIBUTE` lists the fields so tests can check the ``.ui``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing
from typing import Any


FIELDS_ATTRIBUTE = "_dtc_harness_fields"  # {name: (base type, [annotations], default)}


@dataclasses.dataclass
class Default:
    value: Any


@dataclasses.dataclass
class WithinRange:
    minimum: float
    maximum: float


@dataclasses.dataclass
class Minimum:
    minimum: float


@dataclasses.dataclass
class Maximum:
    maximum: float


class Choice:
    def __init__(self, choices) -> None:
        self.choices = list(choices)


def _split(annotation) -> tuple[type, list]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, list(extras)
    return annotation, []


def _is_node_type(base) -> bool:
    args = typing.get_args(base)
    candidates = args if args else (base,)
    return all(isinstance(c, type) and c.__name__.startswith("vtkMRML") for c in candidates if c is not type(None))


_PLAIN_DEFAULTS = {str: "", int: 0, float: 0.0, bool: False, pathlib.Path: pathlib.Path()}


def _validate(name: str, value, extras: list) -> None:
    for extra in extras:
        if isinstance(extra, WithinRange) and not extra.minimum <= value <= extra.maximum:
            raise ValueError(f"{name}={value} not within [{extra.minimum}, {extra.maximum}]")
        if isinstance(extra, Minimum) and value < extra.minimum:
            raise ValueError(f"{name}={value} below {extra.minimum}")
        if isinstance(extra, Maximum) and value > extra.maximum:
            raise ValueError(f"{name}={value} above {extra.maximum}")
        if isinstance(extra, Choice) and value not in extra.choices:
            raise ValueError(f"{name}={value!r} not one of {extra.choices}")


def _make_property(name: str, base, extras: list):
    if _is_node_type(base):
        def getter(self):
            return self.parameterNode.GetNodeReference(name)

        def setter(self, node):
            self.parameterNode.SetNodeReferenceID(name, node.GetID() if node is not None else None)
        return property(getter, setter)

    def getter(self):
        text = self.parameterNode.GetParameter(name)
        if base is bool:
            return text == "True"
        return base(text)

    def setter(self, value):
        value = base(value)
        _validate(name, value, extras)
        self.parameterNode.SetParameter(name, str(value))
    return property(getter, setter)


def parameterNodeWrapper(cls):
    """Class decorator: typed attributes backed by a vtkMRMLScriptedModuleNode."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, annotation in hints.items():
        base, extras = _split(annotation)
        default = next((e.value for e in extras if isinstance(e, Default)), None)
        if default is None and name in cls.__dict__:
            default = cls.__dict__[name]
        if default is None and not _is_node_type(base):
            default = _PLAIN_DEFAULTS.get(base)
        fields[name] = (base, extras, default)

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        for fname, (fbase, _extras, fdefault) in fields.items():
            if not _is_node_type(fbase) and not parameterNode.GetParameter(fname):
                setattr(self, fname, fdefault)

    namespace = {
        "__init__": __init__,
        "__doc__": cls.__doc__,
        "connectGui": lambda self, gui: None,
        "disconnectGui": lambda self, tag: None,
        FIELDS_ATTRIBUTE: fields,
    }
    for name, (base, extras, _default) in fields.items():
        namespace[name] = _make_property(name, base, extras)
    return type(cls.__name__, (), namespace)
