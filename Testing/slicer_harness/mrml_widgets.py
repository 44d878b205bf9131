"""PySide6 implementations of the Slicer / CTK widgets this module's .ui uses (the harness's subset).

Each class is named like the Slicer / CTK class, so ``QUiLoader.registerCustomWidget`` builds it from
the .ui, and implements part of that class' API (what every supported tag has, ``api_versions``); the proxies of
:mod:`pythonqt` expose only the declared API, so whatever these classes add for convenience stays
unreachable from module code. Behaviour follows the Slicer/CTK source: a node combo box lists the
scene's nodes of ``nodeTypes`` (hidden nodes excluded), selects the first one when "None" is not
enabled, and emits ``currentNodeChanged(vtkMRMLNode*)`` / ``currentNodeIDChanged(QString)``; a
directory button emits ``directoryChanged(QString)`` when its directory changes.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Property, Signal


class qMRMLWidget(QtWidgets.QWidget):
    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerScriptedLoadableModuleWidget(qMRMLWidget):
    """What Slicer passes as ``parent`` to a scripted module widget: a widget with a vertical layout."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setLayout(QtWidgets.QVBoxLayout())
        self._entered = False

    def _get_entered(self) -> bool:
        return self._entered

    isEntered = Property(bool, _get_entered)

    def enter(self) -> None:
        self._entered = True

    def exit(self) -> None:
        self._entered = False


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """Drawn as a group box titled with the button text; ``collapsed`` hides the contents."""

    contentsCollapsed = Signal(bool)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._collapsed = False
        self._folded: set = set()  # children hidden by collapsing (shown again on expanding)

    def _get_text(self) -> str:
        return self.title()

    def _set_text(self, text: str) -> None:
        self.setTitle(text)

    def _get_collapsed(self) -> bool:
        return self._collapsed

    def _set_collapsed(self, collapsed: bool) -> None:
        if collapsed != self._collapsed:
            self._collapsed = collapsed
            self._apply_collapsed()
            self.contentsCollapsed.emit(collapsed)

    def _apply_collapsed(self) -> None:
        """Fold or unfold the contents; a child the module hid itself stays hidden (CTK keeps such a child's
        "visibilityToParent" false: ctkCollapsibleButtonPrivate::setChildVisibility)."""
        for child in self.children():
            if not isinstance(child, QtWidgets.QWidget):
                continue
            if self._collapsed and not child.isHidden():
                self._folded.add(child)
                child.setVisible(False)
            elif not self._collapsed and (child in self._folded or not child.isHidden()):
                child.setVisible(True)
        if not self._collapsed:
            self._folded.clear()

    def showEvent(self, event) -> None:  # the .ui sets "collapsed" before the contents exist
        self._apply_collapsed()
        super().showEvent(event)

    text = Property(str, _get_text, _set_text)
    collapsed = Property(bool, _get_collapsed, _set_collapsed)


class ctkDirectoryButton(QtWidgets.QPushButton):
    directoryChanged = Signal(str)
    directorySelected = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._directory = ""

    def _get_directory(self) -> str:
        return self._directory

    def _set_directory(self, path: str) -> None:
        path = str(path)
        if path != self._directory:
            self._directory = path
            self.setText(path)
            self.directoryChanged.emit(path)

    directory = Property(str, _get_directory, _set_directory)


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene, self._observers = None, []
        self._types, self._none, self._noneDisplay, self._showHidden = [], False, "None", False
        self._flags = {"addEnabled": True, "removeEnabled": True, "editEnabled": False, "renameEnabled": False}
        self._nodes, self._current = [], None
        super().currentIndexChanged.connect(self._onIndex)

    # properties of the .ui
    def _get_types(self):
        return list(self._types)

    def _set_types(self, types) -> None:
        self._types = list(types)
        self._refresh()

    def _get_none(self) -> bool:
        return self._none

    def _set_none(self, value: bool) -> None:
        self._none = bool(value)
        self._refresh()

    def _get_none_display(self) -> str:
        return self._noneDisplay

    def _set_none_display(self, text: str) -> None:
        self._noneDisplay = str(text)
        self._refresh()

    def _flag(name):  # noqa: N805
        def getter(self) -> bool:
            return bool(self._flags[name])

        def setter(self, value) -> None:
            self._flags[name] = bool(value)

        return Property(bool, getter, setter)

    def _get_show_hidden(self) -> bool:
        return self._showHidden

    def _set_show_hidden(self, value) -> None:
        self._showHidden = bool(value)

    nodeTypes = Property("QStringList", _get_types, _set_types)
    noneEnabled = Property(bool, _get_none, _set_none)
    noneDisplay = Property(str, _get_none_display, _set_none_display)
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    editEnabled = _flag("editEnabled")
    renameEnabled = _flag("renameEnabled")
    showHidden = Property(bool, _get_show_hidden, _set_show_hidden)

    def _get_id(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def _set_id(self, node_id: str) -> None:
        self.setCurrentNodeID(node_id)

    currentNodeID = Property(str, _get_id, _set_id)

    # API
    def setMRMLScene(self, scene) -> None:
        for tag in self._observers:
            self._scene.RemoveObserver(tag)
        self._scene, self._observers = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndImportEvent):
                self._observers.append(scene.AddObserver(event, lambda caller, ev: self._refresh()))
        self._refresh()

    def mrmlScene(self):
        return self._scene

    def nodeCount(self) -> int:
        return len(self._nodes)

    def nodeFromIndex(self, index: int):
        return self._nodes[index] if 0 <= index < len(self._nodes) else None

    def currentNode(self):
        return self._current

    def currentNodeId(self) -> str:
        return self._get_id()

    def setCurrentNode(self, node) -> None:
        if node is not None and node not in self._nodes:
            node = None
        self._select(node)

    def setCurrentNodeID(self, node_id: str) -> None:
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None)

    def setCurrentNodeIndex(self, index: int) -> None:
        self.setCurrentNode(self.nodeFromIndex(index))

    # behaviour
    def _matches(self, node) -> bool:
        if not any(node.IsA(t) for t in self._types):
            return False
        return self._showHidden or not node.GetHideFromEditors()

    def _refresh(self) -> None:
        nodes = []
        if self._scene is not None and self._types:
            every = (self._scene.GetNthNode(i) for i in range(self._scene.GetNumberOfNodes()))
            nodes = [n for n in every if self._matches(n)]
        self._nodes = nodes
        self.blockSignals(True)
        super().clear()
        if self._none:
            super().addItem(self._noneDisplay)
        for node in nodes:
            super().addItem(node.GetName())
        self.blockSignals(False)
        current = self._current if self._current in nodes else None
        if current is None and not self._none and nodes:
            current = nodes[0]  # as Slicer: without "None", the first node is selected
        self._select(current, force_index=True)

    def _select(self, node, force_index: bool = False) -> None:
        changed = node is not self._current
        self._current = node
        index = (self._nodes.index(node) if node is not None else -1) + (1 if self._none else 0)
        self.blockSignals(True)
        super().setCurrentIndex(index if (node is not None or self._none) else -1)
        self.blockSignals(False)
        if changed:
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def _onIndex(self, index: int) -> None:  # the user picked an item
        offset = 1 if self._none else 0
        self._select(self._nodes[index - offset] if index - offset >= 0 and index - offset < len(self._nodes) else None)


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    checkedNodesChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._checked: list = []

    def checkedNodes(self) -> list:
        return [n for n in self._nodes if n.GetID() in self._checked]

    def uncheckedNodes(self) -> list:
        return [n for n in self._nodes if n.GetID() not in self._checked]

    def setCheckState(self, node, state) -> None:
        checked = state == QtCore.Qt.Checked
        if checked and node.GetID() not in self._checked:
            self._checked.append(node.GetID())
        elif not checked and node.GetID() in self._checked:
            self._checked.remove(node.GetID())
        self.checkedNodesChanged.emit()

    def check(self, node) -> None:
        self.setCheckState(node, QtCore.Qt.Checked)

    def uncheck(self, node) -> None:
        self.setCheckState(node, QtCore.Qt.Unchecked)


class qMRMLPlotWidget(qMRMLWidget):
    """Shows the chart of its plot view node: each series' table columns drawn as lines (offscreen-safe)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._view = None
        self.setMinimumHeight(120)

    def setMRMLPlotViewNode(self, node) -> None:
        self._view = node
        self.update()

    def mrmlPlotViewNode(self):
        return self._view

    def _series(self) -> list:
        if self._view is None or self._view.GetPlotChartNode() is None:
            return []
        chart = self._view.GetPlotChartNode()
        out = []
        for i in range(chart.GetNumberOfPlotSeriesNodes()):
            series = chart.GetNthPlotSeriesNode(i)
            table = series.GetTableNode().GetTable() if series.GetTableNode() else None
            if table is None or table.GetNumberOfRows() == 0:
                continue
            xs = table.GetColumnByName(series.GetXColumnName())
            ys = table.GetColumnByName(series.GetYColumnName())
            points = [(xs.GetValue(r), ys.GetValue(r)) for r in range(table.GetNumberOfRows())]
            out.append((series.GetColor(), points))
        return out

    def paintEvent(self, event) -> None:
        painter = QtGui.QPainter(self)
        painter.fillRect(self.rect(), QtGui.QColor("white"))
        series = self._series()
        values = [p for _, pts in series for p in pts if p[1] == p[1]]
        if values:
            x0, x1 = min(p[0] for p in values), max(p[0] for p in values) or 1
            y0, y1 = min(p[1] for p in values), max(p[1] for p in values)
            w, h, m = self.width(), self.height(), 8
            for color, pts in series:
                painter.setPen(QtGui.QPen(QtGui.QColor.fromRgbF(*color), 2))
                scaled = [QtCore.QPointF(m + (x - x0) / ((x1 - x0) or 1) * (w - 2 * m),
                                         h - m - (y - y0) / ((y1 - y0) or 1) * (h - 2 * m)) for x, y in pts if y == y]
                if len(scaled) > 1:
                    painter.drawPolyline(scaled)
        painter.end()


CUSTOM_WIDGETS = (qMRMLWidget, ctkCollapsibleButton, ctkDirectoryButton, qMRMLNodeComboBox,
                  qMRMLCheckableNodeComboBox, qMRMLPlotWidget)
