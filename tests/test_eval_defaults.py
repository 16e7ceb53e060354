"""Evaluation defaults where the user gives none: small channels-last batches on the CPU, the authors' 1000 elsewhere."""
from __future__ import annotations

import torch

from classification.eval import eval_vizwiz, validate
from classification.eval.evaluate import CPU_BATCH_SIZE, eval_defaults


def test_cpu_gets_small_channels_last_batches_and_accelerators_the_authors_batch():
    assert eval_defaults(torch.device("cpu"), None, None) == (CPU_BATCH_SIZE, True)
    assert eval_defaults(torch.device("cuda", 0), None, None) == (1000, False)


def test_explicit_choices_win():
    assert eval_defaults(torch.device("cpu"), 7, False) == (7, False)
    assert eval_defaults(torch.device("cuda"), 64, True) == (64, True)


def test_scripts_leave_both_to_the_defaults_unless_asked():
    for parser in (validate.build_parser(), eval_vizwiz.build_parser()):
        args = parser.parse_args([])
        assert args.batch_size is None and args.channels_last is None
        args = parser.parse_args(["--batch-size", "5", "--no-channels-last"])
        assert args.batch_size == 5 and args.channels_last is False
