"""The shipped ONNX model, loaded the way the service loads it, on clear real-world cases."""

import shutil
from pathlib import Path

import pytest

from model import DEFAULT_MODEL_DIR, Engine, ModelIntegrityError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(DEFAULT_MODEL_DIR, device="cpu")


@pytest.mark.parametrize(
    ("headline", "sentiment"),
    [
        ("Shares of Carnival plunge 25% after the company issues a profit warning", "negative"),
        ("Boeing stock tumbles as FAA grounds jets and orders collapse", "negative"),
        ("Nvidia beats estimates and raises full-year guidance, stock soars to record high", "positive"),
        ("Apple shares jump after record iPhone sales crush expectations", "positive"),
    ],
)
def test_clear_sentiment_cases(engine: Engine, headline: str, sentiment: str) -> None:
    assert engine.predict([headline])[0].sentiment == sentiment


@pytest.mark.parametrize(
    ("headline", "topic"),
    [
        (
            "The Federal Reserve raises interest rates by 25 basis points, Powell signals more hikes",
            "Fed | Central Banks",
        ),
        ("Oil prices climb as OPEC+ agrees to cut crude output", "Energy | Oil"),
        ("Coca-Cola declares quarterly dividend of $0.46 per share", "Dividend"),
        ("Microsoft to acquire Activision Blizzard for $69 billion in all-cash deal", "M&A | Investments"),
    ],
)
def test_clear_topic_cases(engine: Engine, headline: str, topic: str) -> None:
    assert engine.predict([headline])[0].topic == topic


def test_probabilities_are_distributions_in_input_order(engine: Engine) -> None:
    texts = ["Stocks rally", "A much longer headline about the bond market selling off sharply today", "Gold"]
    topic, sentiment = engine.probabilities(texts)
    assert topic.shape == (3, 20) and sentiment.shape == (3, 3)
    assert abs(float(sentiment.sum(axis=1).max()) - 1) < 1e-4
    single = engine.probabilities(texts[1:2])[1][0]
    # int8 quantises activations per batch, so companions shift scores slightly, never the order.
    assert abs(sentiment[1] - single).max() < 0.05
    assert sentiment[1].argmax() == single.argmax()


def test_long_article_is_truncated_not_rejected(engine: Engine) -> None:
    article = "Shares plunged after the profit warning. " + "The company said demand was weak. " * 3000
    result = engine.predict([article, "short"])
    assert result[0].sentiment == "negative"
    assert len(engine.tokenizer.encode(article).ids) == engine.max_tokens


def test_tampered_model_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    with (copy / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json has sha256"):
        Engine(copy)


def test_engine_reports_version_and_cpu_provider(engine: Engine) -> None:
    assert engine.version.startswith("minilm-mt-")
    assert engine.variant == "int8"
    assert engine.providers == ["CPUExecutionProvider"]


def test_cpu_graph_has_the_measured_layout() -> None:
    """Residual Add + LayerNorm unfused; layer 0's FFN output float and unsmoothed, layers 1-5 per token."""
    import onnx

    graph = onnx.load(str(DEFAULT_MODEL_DIR / "model.int8.onnx")).graph
    op_types = [node.op_type for node in graph.node]
    assert "SkipLayerNormalization" not in op_types and op_types.count("LayerNormalization") == 12
    producers = {output: node for node in graph.node for output in node.output}
    (float_matmul,) = [node for node in graph.node if node.op_type == "MatMul"]
    assert "layer.0/output/dense" in float_matmul.name
    assert producers[float_matmul.input[0]].op_type != "Mul"
    per_token = {
        node.name.split("/output/dense")[0] for node in graph.node if node.name.endswith("_per_token_MatMul")
    }
    assert len(per_token) == 5 and not any("layer.0" in name for name in per_token)
