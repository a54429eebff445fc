"""Comparing a build's logits with PyTorch's."""

from __future__ import annotations

import numpy as np

from qbuild.verify import compare_logits


def test_logits_are_compared_by_error_cosine_and_top1():
    reference = np.array([[1.0, 3.0, 2.0]])
    report = compare_logits(reference, reference * 2)
    assert report["cosine_similarity"] == 1.0 and report["top1_agreement"] == 1.0
    assert report["max_abs_error"] == 3.0 and report["max_abs_reference"] == 3.0


def test_all_zero_logits_agree_with_all_zero_logits_only():
    zeros = np.zeros((1, 4))
    assert compare_logits(zeros, zeros)["cosine_similarity"] == 1.0
    assert compare_logits(zeros, np.array([[0.0, 1.0, 0.0, 0.0]]))["cosine_similarity"] == 0.0
