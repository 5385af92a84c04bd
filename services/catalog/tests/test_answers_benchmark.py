"""A quality floor for answers (not a timing test): the benchmark's questions must keep working."""

from services.catalog.benchmark.answers_accuracy import catalog_docs, evaluate, load_questions


def test_answers_keep_at_least_their_benchmarked_accuracy():
    questions = load_questions()
    assert len(questions) >= 50
    result = evaluate(questions, catalog_docs())
    assert result["top3"] >= 0.9, result["misses"]
    assert result["top1"] >= 0.85, result["misses"]
