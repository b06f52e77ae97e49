"""Evaluation: linear and few-shot probes, weighted k-NN, collapse checks, alignment and
uniformity, baselines, anomaly scores with their AUROC, plots, and one `evaluate` that every
demo reports with (plots import matplotlib only when called)."""
from .anomaly import (autoencoder_scores, knn_scores, pca_scores, reconstruction_per_example,
                      roc_auc, vae_scores)
from .baselines import baseline_records, fit_pca, pca_features, raw_pixels
from .evaluate import (encode, evaluate, evaluate_features, format_header, format_row, print_row,
                       print_table, view_pairs)
from .health import alignment, embedding_std, rankme, uniformity
from .knn import knn_accuracy, knn_predict
from .plots import plot_curves, plot_embeddings, plot_image_grid
from .probe import few_shot_probe, fit_softmax_regression, linear_probe, standardize
from .monitor import EVAL_NAMES, CollapseGauges, Evaluator
