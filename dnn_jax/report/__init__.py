"""The run report: pictures of a trained run and an index.html tying them together.

Imported only when a report is drawn, so training start-up never pays for matplotlib.
"""
