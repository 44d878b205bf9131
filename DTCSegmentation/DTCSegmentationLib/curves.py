"""The fine-tune loss curve as Slicer plot nodes (a table + one series per loss + a chart).

Rows are appended from the trainer's ``progress`` events; the chart is shown in the panel's plot
widget (and in any plot view). Table columns: iteration, total, dice, lsf, consistency, ce (the cross-entropy
of the copy-paste modes; empty for the others).
"""

from __future__ import annotations

import slicer
import vtk

from DTCCore.protocol import LOSS_NAMES, OPTIONAL_LOSS_NAMES

TABLE_NAME = "DTC fine-tune losses"
CHART_NAME = "DTC fine-tune loss curve"
LOSS_COLUMNS = LOSS_NAMES + OPTIONAL_LOSS_NAMES  # keys of the trainer's "losses" record, in the table's order
SERIES_COLORS = {"total": (0.0, 0.0, 0.0), "dice": (0.85, 0.2, 0.2), "lsf": (0.2, 0.4, 0.85),
                 "consistency": (0.2, 0.65, 0.3), "ce": (0.85, 0.55, 0.1)}


class LossCurve:
    def __init__(self) -> None:
        scene = slicer.mrmlScene
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(TABLE_NAME))
        table = self.table.GetTable()
        for name in ("iteration",) + LOSS_COLUMNS:
            column = vtk.vtkDoubleArray()
            column.SetName(name)
            table.AddColumn(column)
        self.chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(CHART_NAME))
        self.chart.SetTitle("Fine-tune losses")
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss")
        for name in LOSS_COLUMNS:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{TABLE_NAME} {name}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(name)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            series.SetColor(*SERIES_COLORS[name])
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())

    def add(self, event: dict) -> None:
        """Append one ``progress`` event ({"iteration": i, "losses": {...}})."""
        table = self.table.GetTable()
        row = table.InsertNextBlankRow()
        table.SetValue(row, 0, vtk.vtkVariant(float(event["iteration"])))
        losses = event.get("losses", {})
        for col, name in enumerate(LOSS_COLUMNS, start=1):
            table.SetValue(row, col, vtk.vtkVariant(float(losses.get(name, float("nan")))))
        table.Modified()
        self.table.Modified()

    def rows(self) -> int:
        return self.table.GetNumberOfRows()
