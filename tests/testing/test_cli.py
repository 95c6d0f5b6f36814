"""``python -m sparsepass.testing check``: exit 0 when equivalent, 1 when not, 2 when unusable."""

import textwrap

import pytest

from sparsepass.testing.cli import main

FACTORIES = textwrap.dedent('''
    import torch
    from sparsepass import prune


    def pruned_mlp():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
        prune.prune_linears(model, (32, 1), 0.2)
        return model, (torch.randn(128, 256),)


    class Noisy(torch.nn.Module):
        """Differs from itself call to call: no rewrite can be equivalent to it."""

        def __init__(self):
            super().__init__()
            self.model = pruned_mlp()[0]

        def forward(self, x):
            return self.model(x) + torch.rand(()).item()


    def noisy():
        return Noisy(), (torch.randn(128, 256),)


    def bert_at_two_lengths():
        import transformers

        torch.manual_seed(0)
        config = transformers.BertConfig(hidden_size=128, intermediate_size=512, num_attention_heads=4,
                                         num_hidden_layers=1, vocab_size=200)
        model = transformers.BertModel(config, add_pooling_layer=False)
        prune.prune_linears(model, (32, 1), 0.2)
        return model, [(torch.randint(0, 200, (2, 16)),), (torch.randint(0, 200, (3, 40)),)]
''')


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


@pytest.mark.parametrize("path", ["fx", "relax"])
def test_an_equivalent_model_exits_0_with_the_report(factories, path, capsys):
    assert main(["check", f"{factories}:pruned_mlp", "--path", path]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 layers rewritten" in out and f"EQUIVALENT on 1 input(s) ({path} path)" in out


def test_a_model_that_differs_exits_1(factories, capsys):
    assert main(["check", f"{factories}:noisy"]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_an_unusable_factory_exits_2(factories, capsys):
    assert main(["check", f"{factories}:no_such_factory"]) == 2
    assert "cannot use" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", ["fx", "relax"])
def test_input_sets_of_different_shapes_are_checked_on_one_dynamic_capture(factories, path, capsys):
    pytest.importorskip("transformers")
    assert main(["check", f"{factories}:bert_at_two_lengths", "--path", path]) == 0
    assert f"EQUIVALENT on 2 input(s) ({path} path)" in capsys.readouterr().out
