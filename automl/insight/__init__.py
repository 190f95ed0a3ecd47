"""Insight into a trained model and a study: metrics, fairness across classes and groups,
calibration, robustness to corruptions, saliency, plots, the evaluation recorded after a
search (``recording``), the study's story in the MLflow UI (``story``) and the HTML
report."""
