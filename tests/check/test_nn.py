"""The nn checkers: the reference passes, and each usual mistake fails with the hint that names it."""

import torch

from lmcore import check
from lmcore import nn as ref


def test_the_reference_softmax_passes_every_case():
    assert check.softmax(ref.softmax, show=False)


def test_softmax_without_the_max_is_told_to_subtract_it():
    def naive(x, dim):
        e = torch.exp(x)
        return e / e.sum(dim=dim, keepdim=True)

    report = check.softmax(naive, show=False)
    assert not report
    assert any("subtract the max" in h for h in report.hints)


def test_softmax_over_the_last_axis_only_is_told_the_axis_is_wrong():
    def last_axis(x, dim):
        x = x - x.amax(-1, keepdim=True)
        return x.exp() / x.exp().sum(-1, keepdim=True)

    report = check.softmax(last_axis, show=False)
    assert not report and any("wrong dimension" in h for h in report.hints)


def test_a_stub_is_reported_not_written_and_a_wrong_kind_in_one_line():
    def stub(x, dim):
        raise NotImplementedError

    report = check.softmax(stub, show=False)
    assert not report and "not written yet" in str(report) and "\n" not in str(report)
    assert "got a class" in str(check.softmax(torch.nn.Softmax, show=False))
    assert "keep the stub's signature" in str(check.softmax(lambda x: x, show=False))
