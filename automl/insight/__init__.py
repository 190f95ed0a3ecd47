"""Insight into a trained model and a study: metrics, fairness across classes and groups,
calibration, robustness to corruptions, saliency, plots and the HTML report."""
