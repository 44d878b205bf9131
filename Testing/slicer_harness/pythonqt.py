"""A PythonQt-compatible ``qt`` / ``ctk`` / ``slicer.q*`` layer over PySide6 (offscreen), strict.

What Slicer's Python sees of a Qt object is PythonQt's view: Qt properties read and written as
attributes (``button.text = "Cancel"``), signals connected by signature
(``button.connect("clicked(bool)", slot)``, the slot called with as many arguments as it takes) or
as attributes (``combo.currentIndexChanged.connect(f)``), slots and invokable methods called as
methods. This module wraps PySide6 objects in proxies that behave that way and expose ONLY that:

- a Qt class (``qt.QPushButton``) exposes what PySide6 has for it (the same C++ API);
- a Slicer / CTK class (``slicer.qMRMLNodeComboBox``, ``ctk.ctkDirectoryButton``) exposes the Q_PROPERTYs,
  signals, public slots and Q_INVOKABLE methods its header declares at EVERY supported tag (v5.6.2,
  v5.8.1, v5.10.0, v5.12.3: ``api/*.json``, see ``extract_api.py``) plus its declared Qt base class'
  API; the harness implements a subset
  (:mod:`mrml_widgets`); a declared name it lacks raises ``NotImplementedError`` (never a silent no-op);
- any other name raises ``AttributeError``, as PythonQt does.

``type(proxy)`` is the proxy class of the object's own class, so the ``type(widget) == qt.QCheckBox``
checks of Slicer's parameterNodeWrapper behave as in Slicer.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import xml.etree.ElementTree as ET

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: E402

from . import api_versions  # noqa: E402

# What every supported Slicer has (v5.6.2 to v5.12.3: the intersection of api/slicer-<tag>.json), so a
# widget name that one supported version lacks raises AttributeError here too.
API = api_versions.widget_api()
QT_MODULES = (QtCore, QtGui, QtWidgets)
# Slicer / CTK classes that Slicer's parameterNodeWrapper (v5.6.2 to v5.12.3, wrapper_versions.py) names in its
# type checks; they exist in Slicer, so they exist here, but the harness cannot create one (nothing in this
# module's .ui uses them). ctkCheckablePushButton and ctkColorPickerButton: named from v5.10.0 on.
DECLARED_ONLY = {
    "ctk": ["ctkCheckBox", "ctkSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox", "ctkComboBox", "ctkPathLineEdit",
            "ctkRangeWidget", "ctkDoubleRangeSlider", "ctkRangeSlider", "ctkCheckableComboBox",
            "ctkCheckablePushButton", "ctkColorPickerButton"],
    "slicer": ["qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qMRMLSubjectHierarchyComboBox",
               "qMRMLSegmentSelectorWidget"],
}
FILE_DIALOG_ANSWERS: list = []  # what the next QFileDialog.get*() returns (tests push answers here)


def _pin_singletons() -> None:
    """Keep None / True / False alive under PySide6 6.12 on Python < 3.12.

    Measured here (PySide6-Essentials 6.12.0, abi3 wheel, CPython 3.11.7): every call of a void Qt method
    (``QComboBox.setCurrentIndex``) drops one reference to ``None`` and every signal ``emit`` one to
    ``True`` without having taken it, as if they were immortal (they are from Python 3.12). After enough
    calls the interpreter aborts ("deallocating None"). Raising their reference counts by 2**40 makes
    them effectively immortal, as on Python 3.12; nothing else changes.
    """
    if sys.version_info >= (3, 12):
        return
    import ctypes

    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += 1 << 40


_pin_singletons()


def application() -> QtWidgets.QApplication:
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def normalize(signature: str) -> str:
    return QtCore.QMetaObject.normalizedSignature(signature).data().decode()


def _api_chain(name: str) -> list[dict]:
    chain = []
    while name in API["classes"]:
        chain.append(API["classes"][name])
        name = API["classes"][name]["base"]
    return chain


def _qt_base(name: str) -> type:
    while name in API["classes"]:
        name = API["classes"][name]["base"]
    return _find_qt(name)


def _find_qt(name: str):
    for module in QT_MODULES + (QtUiTools,):
        if hasattr(module, name):
            return getattr(module, name)
    return None


# ---------------------------------------------------------------------------------------------- wrapping
def wrap(value):
    if isinstance(value, QtCore.QObject):
        proxy = value.__dict__.get("_pythonqt_proxy") if hasattr(value, "__dict__") else None
        if proxy is None:
            cls = proxy_class_for(value)
            proxy = cls.__new__(cls)
            _bind(proxy, value)
        return proxy
    if isinstance(value, (list, tuple)) and any(isinstance(v, QtCore.QObject) for v in value):
        return [wrap(v) for v in value]
    return value


def unwrap(value):
    if isinstance(value, QObjectProxy):
        return object.__getattribute__(value, "_obj")
    if isinstance(value, type) and issubclass(value, QObjectProxy):
        return value._qt_class
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v) for v in value)
    return value


def _bind(proxy, obj) -> None:
    object.__setattr__(proxy, "_obj", obj)
    object.__setattr__(proxy, "_adapters", {})
    obj._pythonqt_proxy = proxy


def _call_adapter(fn):
    def call(*args, **kwargs):
        return wrap(fn(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}))
    call.__name__ = getattr(fn, "__name__", "method")
    return call


def _arity(slot) -> int | None:
    """Positional parameters the slot takes (None: any number), as PythonQt counts them."""
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _slot_adapter(slot):
    n = _arity(slot)

    def deliver(*args):
        values = [wrap(a) for a in args]
        return slot(*(values if n is None else values[:n]))
    return deliver


class BoundSignal:
    """``widget.signalName``: connect / disconnect / emit, arguments wrapped as PythonQt does."""

    def __init__(self, proxy, name: str) -> None:
        self._proxy, self._name = proxy, name
        self._signal = getattr(object.__getattribute__(proxy, "_obj"), name)

    def connect(self, slot) -> None:
        adapter = _slot_adapter(slot)
        object.__getattribute__(self._proxy, "_adapters").setdefault((self._name, slot), []).append(adapter)
        self._signal.connect(adapter)

    def disconnect(self, slot) -> None:
        adapters = object.__getattribute__(self._proxy, "_adapters").get((self._name, slot), [])
        if not adapters:
            raise RuntimeError(f"{self._name} is not connected to {slot}")
        self._signal.disconnect(adapters.pop())

    def emit(self, *args) -> None:
        self._signal.emit(*[unwrap(a) for a in args])


# ---------------------------------------------------------------------------------------------- proxies
class _ProxyMeta(type):
    def __getattr__(cls, name: str):
        if name.startswith("__") or cls.__dict__.get("_qt_class") is None and name == "_qt_class":
            raise AttributeError(name)
        target = _qt_base(cls.__name__) if cls._slicer_name else cls._qt_class
        if target is not None and hasattr(target, name):  # enums and static functions of the Qt class
            value = getattr(target, name)
            if isinstance(value, (types.BuiltinFunctionType, types.FunctionType)) or type(value).__name__ in (
                    "builtin_function_or_method", "method_descriptor"):
                return _call_adapter(value)
            return value
        raise AttributeError(f"type object '{cls.__name__}' has no attribute '{name}'")


class QObjectProxy(metaclass=_ProxyMeta):
    _qt_class = QtCore.QObject  # the PySide6 class (or the harness implementation of a Slicer/CTK class)
    _slicer_name = ""  # Slicer / CTK class name, when this proxies one
    _implemented = True
    _allowed_cache: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        cls = type(self)
        if not cls._implemented:
            raise NotImplementedError(f"{cls.__name__} exists in Slicer but the test harness does not provide it")
        application()
        _bind(self, cls._qt_class(*[unwrap(a) for a in args], **kwargs))

    @classmethod
    def _allowed(cls) -> dict:
        """{name: "property" | "signal" | "method"} this class exposes in PythonQt."""
        key = cls.__name__
        if key not in QObjectProxy._allowed_cache:
            allowed: dict = {}
            qt_class = _qt_base(key) if cls._slicer_name else cls._qt_class
            if qt_class is not None:
                allowed.update({n: "method" for n in dir(qt_class) if not n.startswith("_")})
                meta = qt_class.staticMetaObject
                for i in range(meta.propertyCount()):
                    allowed[meta.property(i).name()] = "property"
            for entry in _api_chain(cls._slicer_name):
                allowed.update({n: "method" for n in entry["methods"]})
                allowed.update({s.split("(")[0]: "signal" for s in entry["signals"]})
                allowed.update({n: "property" for n in entry["properties"]})
            QObjectProxy._allowed_cache[key] = allowed
        return QObjectProxy._allowed_cache[key]

    def _signatures(self) -> set:
        obj = object.__getattribute__(self, "_obj")
        meta = obj.metaObject()
        sigs = {meta.method(i).methodSignature().data().decode() for i in range(meta.methodCount())
                if meta.method(i).methodType() == QtCore.QMetaMethod.Signal}
        for entry in _api_chain(type(self)._slicer_name):
            sigs |= set(entry["signals"])
        return sigs

    def __getattr__(self, name: str):
        obj = object.__getattribute__(self, "_obj")
        cls = type(self)
        if name == "name":  # PythonQt: the objectName
            return obj.objectName()
        kind = cls._allowed().get(name)
        if kind is None:
            raise AttributeError(f"'{cls.__name__}' object has no attribute '{name}'")
        if kind == "property" or (obj.metaObject().indexOfProperty(name) >= 0 and kind != "signal"):
            if obj.metaObject().indexOfProperty(name) < 0:
                raise NotImplementedError(
                    f"{cls.__name__}.{name} (a Slicer property) is not provided by the test harness")
            return wrap(obj.property(name))
        if kind == "signal" or isinstance(getattr(type(obj), name, None), QtCore.Signal):
            if not hasattr(obj, name):
                raise NotImplementedError(
                    f"{cls.__name__}.{name} (a Slicer signal) is not provided by the test harness")
            return BoundSignal(self, name)
        value = getattr(obj, name, None)
        if value is None:
            raise NotImplementedError(f"{cls.__name__}.{name}() exists in Slicer but not in the test harness")
        return _call_adapter(value) if callable(value) else wrap(value)

    def __setattr__(self, name: str, value) -> None:
        obj = object.__getattribute__(self, "_obj")
        meta = obj.metaObject()
        index = meta.indexOfProperty(name)
        if type(self)._allowed().get(name) != "property" or index < 0:
            raise AttributeError(f"'{type(self).__name__}' object has no property '{name}' to set")
        if not meta.property(index).isWritable():
            raise AttributeError(f"property '{name}' of {type(self).__name__} is read-only")
        value = list(value) if isinstance(value, tuple) else value  # PythonQt: a sequence converts to a list type
        if not obj.setProperty(name, unwrap(value)):
            raise TypeError(f"{type(self).__name__}.{name} cannot be set to {value!r}")

    def __eq__(self, other) -> bool:
        return (isinstance(other, QObjectProxy)
                and object.__getattribute__(self, "_obj") is object.__getattribute__(other, "_obj"))

    def __hash__(self) -> int:
        return id(object.__getattribute__(self, "_obj"))

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} proxy of {object.__getattribute__(self, '_obj')!r}>"

    def connect(self, *args) -> bool:
        """PythonQt's ``obj.connect("signal(types)", slot)``."""
        if len(args) != 2 or not isinstance(args[0], str):
            raise NotImplementedError("the harness supports obj.connect('signal(args)', callable) only")
        signature, slot = normalize(args[0]), args[1]
        if signature not in self._signatures():
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        name = signature.split("(")[0]
        obj = object.__getattribute__(self, "_obj")
        if not hasattr(obj, name):
            raise NotImplementedError(f"{type(self).__name__} signal {signature} is not provided by the test harness")
        BoundSignal(self, name).connect(slot)
        return True

    def disconnect(self, *args) -> bool:
        signature, slot = normalize(args[0]), args[1]
        BoundSignal(self, signature.split("(")[0]).disconnect(slot)
        return True


_PROXY_CLASSES: dict = {}


def proxy_class(name: str):
    """The proxy class for a Qt, CTK or Slicer class name (created once, so ``type(x) == qt.QCheckBox`` works)."""
    if name in _PROXY_CLASSES:
        return _PROXY_CLASSES[name]
    from . import mrml_widgets

    if name in API["classes"] or any(name in names for names in DECLARED_ONLY.values()):
        impl = getattr(mrml_widgets, name, None)
        base_name = API["classes"].get(name, {}).get("base", "QWidget")
        base = proxy_class(base_name)
        cls = _ProxyMeta(name, (base,), {"_qt_class": impl or base._qt_class, "_slicer_name": name,
                                          "_implemented": impl is not None, "__module__": "pythonqt"})
    else:
        qt_class = _find_qt(name)
        if qt_class is None or not isinstance(qt_class, type) or not issubclass(qt_class, QtCore.QObject):
            raise AttributeError(f"no Qt QObject class {name}")
        parent = qt_class.__mro__[1]
        base = QObjectProxy if qt_class is QtCore.QObject else proxy_class(parent.__name__)
        namespace = {"_qt_class": qt_class, "_slicer_name": "", "_implemented": True, "__module__": "qt"}
        namespace.update(SPECIAL_METHODS.get(name, {}))
        cls = _ProxyMeta(name, (base,), namespace)
    _PROXY_CLASSES[name] = cls
    return cls


def proxy_class_for(obj: QtCore.QObject):
    name = type(obj).__name__
    if name in API["classes"] or _find_qt(name) is type(obj):
        return proxy_class(name)
    for klass in type(obj).__mro__:
        if _find_qt(klass.__name__) is klass or klass.__name__ in API["classes"]:
            return proxy_class(klass.__name__)
    return QObjectProxy


# ------------------------------------------------------------------ PythonQt-specific behaviour of a few classes
def _file_dialog_answer(*args, **kwargs):
    if not FILE_DIALOG_ANSWERS:
        raise AssertionError("a file dialog opened but the test gave no answer (pythonqt.FILE_DIALOG_ANSWERS)")
    return FILE_DIALOG_ANSWERS.pop(0)


def _load_ui(self, qfile, parent=None):
    """QUiLoader.load with the harness's Slicer/CTK widgets and the .ui's signal/slot connections."""
    from . import mrml_widgets

    application()
    loader = QtUiTools.QUiLoader()
    for cls in mrml_widgets.CUSTOM_WIDGETS:
        loader.registerCustomWidget(cls)
    tree = ET.parse(unwrap(qfile).fileName())
    connections = tree.getroot().find("connections")
    if connections is not None:  # made below by name: Qt cannot match "vtkMRMLScene*" to a Python signal
        tree.getroot().remove(connections)
    buffer = QtCore.QBuffer()
    buffer.setData(ET.tostring(tree.getroot()))
    buffer.open(QtCore.QIODevice.ReadOnly)
    root = loader.load(buffer, unwrap(parent))
    if root is None:
        return None
    proxy = wrap(root)
    named = {w.objectName(): w for w in [root] + root.findChildren(QtCore.QObject)}
    for conn in (connections if connections is not None else []):
        sender, receiver = wrap(named[conn.findtext("sender")]), wrap(named[conn.findtext("receiver")])
        slot_name = conn.findtext("slot").split("(")[0]
        sender.connect(conn.findtext("signal"), getattr(receiver, slot_name))
    return proxy


SPECIAL_METHODS = {
    # PythonQt returns the chosen path (str / list), not PySide6's (path, filter) tuple
    "QFileDialog": {"getOpenFileName": staticmethod(_file_dialog_answer),
                    "getOpenFileNames": staticmethod(_file_dialog_answer),
                    "getSaveFileName": staticmethod(_file_dialog_answer),
                    "getExistingDirectory": staticmethod(_file_dialog_answer)},
    "QUiLoader": {"load": _load_ui},
}


class _Namespace(types.ModuleType):
    """``qt`` / ``ctk``: Qt classes as proxies (QObjects) or PySide6 values; unknown names raise AttributeError."""

    def __init__(self, name: str, own: list) -> None:
        super().__init__(name)
        self._own = set(own)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._own:
            return proxy_class(name)
        if self.__name__ == "qt":
            value = _find_qt(name)
            if value is not None:
                if isinstance(value, type) and issubclass(value, QtCore.QObject):
                    return proxy_class(name)
                return value
        raise AttributeError(f"module '{self.__name__}' has no attribute '{name}'")


def make_qt() -> types.ModuleType:
    module = _Namespace("qt", [])
    module.__doc__ = "PythonQt-compatible qt over PySide6 (Testing/slicer_harness/pythonqt.py)"
    return module


def make_ctk() -> types.ModuleType:
    own = [n for n in API["classes"] if n.startswith("ctk")] + DECLARED_ONLY["ctk"]
    return _Namespace("ctk", own)


def slicer_classes() -> dict:
    """``slicer.q*`` widget classes (MRML widgets and module widgets) for the slicer namespace."""
    names = [n for n in API["classes"] if n.startswith("qMRML") or n.startswith("qSlicer")] + DECLARED_ONLY["slicer"]
    return {n: proxy_class(n) for n in names if n not in ("qSlicerCoreApplication", "qSlicerApplication")}


def process_events(seconds: float = 0.0) -> None:
    """Run the Qt event loop (timers fire) for about ``seconds``."""
    import time

    app = application()
    deadline = time.monotonic() + seconds
    while True:
        app.processEvents(QtCore.QEventLoop.AllEvents, 50)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)

