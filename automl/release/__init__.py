"""What happens to a model after a search: concluding the search (``conclude``: refit,
ensemble, mirror, register, over one ``Candidate``; ``rebuild``: a trial's network again),
publishing a trained network as a registered version, promoting and rolling back aliases,
retraining on new data, checking drift, predicting on files and exporting."""
