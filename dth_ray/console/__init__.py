"""`dth-ray console`: a read-only web page of a manifest's jobs and runs (data.py reads, views.py and chart.py
render, app.py serves), fed by what the manifest and a running driver's live record hold."""
