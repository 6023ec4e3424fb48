"""Methods are found through the `ltbench.methods` entry-point group, so another installed
package can add one."""

import sys
import textwrap

from ltbench import registry


def test_a_third_party_method_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "my_lt_method.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from ltbench.method import LinearClassifierMethod

        class LabelSmoothing(LinearClassifierMethod):
            name = "label_smoothing"
            summary = "CE with label smoothing (Szegedy et al., CVPR 2016)"
            hyperparameters = {"smoothing": 0.1}

            def criterion(self, logits, labels, progress):
                return F.cross_entropy(logits, labels, label_smoothing=self.hp["smoothing"])
    '''))
    dist = tmp_path / "my_lt_method-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-lt-method\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ltbench.methods]\nlabel_smoothing = my_lt_method:LabelSmoothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.methods.cache_clear()
    try:
        found = registry.methods()
        assert {"ce", "focal", "label_smoothing"} <= set(found)
        from ltbench.sweep import resolve

        assert resolve("label_smoothing", "cifar10_lt", 100, 0, "paper", {"smoothing": "0.2"}).params["smoothing"] == 0.2
    finally:
        monkeypatch.undo()
        registry.methods.cache_clear()
        sys.modules.pop("my_lt_method", None)
