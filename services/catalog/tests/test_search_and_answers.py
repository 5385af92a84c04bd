from services.catalog import answers, search
from services.catalog.seed_data import seed_items


def docs():
    return [
        {**search.index_fields(g), "item_code": g["item_code"], "name": g["name"], "guide": g} for g in seed_items()
    ]


def test_tokenize_drops_stopwords_punctuation_and_single_characters():
    assert search.tokenize("我想办营业执照，需要带什么材料？") == ["营业", "执照", "营业执照", "材料"]


def test_index_fields_cover_name_keywords_and_guide_text():
    fields = search.index_fields(seed_items()[0])
    assert "津贴" in fields["name_tokens"]
    assert "老年人" in fields["keyword_tokens"]
    assert "户口簿" in fields["text_tokens"]
    assert set(fields["search_tokens"]) == set(fields["name_tokens"]) | set(fields["keyword_tokens"]) | set(
        fields["text_tokens"]
    )


def test_name_matches_outrank_text_matches():
    ranked = search.rank("企业名称", docs())
    assert [d["name"] for _, d in ranked][:2] == ["企业名称自主申报", "企业设立登记"]


def test_rare_tokens_weigh_more_than_common_ones():
    idf = {"津贴": 2.0, "申领": 0.5}
    allowance = search.index_fields(seed_items()[0])
    assert search.score(["津贴"], allowance, idf) > search.score(["申领"], allowance, idf)


def test_a_question_counts_its_first_sixteen_distinct_tokens():
    # A crafted question of many common words made every item a candidate, ranked at length.
    filler = "营业 执照 社保 医保 公积金 户口 护照 驾驶证 结婚 生育 养老 失业 工伤 住房 税务 发票"
    assert len(search.query_tokens(filler)) == search.MAX_QUERY_TOKENS == 16
    assert search.query_tokens(filler + " 营业 执照") == search.query_tokens(filler)  # distinct ones
    # A token past the sixteenth finds nothing by itself.
    assert search.rank(filler + " 津贴", docs()) == search.rank(filler, docs())
    assert search.rank("津贴", docs())


def test_the_cached_token_sets_rank_as_the_stored_lists_do():
    plain = docs()
    cached = [search.with_token_sets(d) for d in plain]
    for question in ("企业名称", "老年人津贴怎么申领", "营业执照需要什么材料"):
        ranked = [(round(s, 9), d["item_code"]) for s, d in search.rank(question, cached)]
        assert ranked == [(round(s, 9), d["item_code"]) for s, d in search.rank(question, plain)]


def test_no_match_gives_nothing():
    assert search.rank("火星移民", docs()) == []


def test_sections_are_detected_from_cue_phrases():
    assert answers.detect_sections("需要带什么材料") == ["materials"]
    assert answers.detect_sections("多久能批下来") == ["time_limit"]
    assert answers.detect_sections("要交多少钱") == ["fees"]
    assert answers.detect_sections("要跑几次") == ["handling"]
    assert answers.detect_sections("高龄津贴") == ["overview"]


def test_passages_are_built_from_the_guide():
    texts = answers.passages(seed_items()[0])
    assert "居民户口簿（可选，政府已有电子证照，无需上传）" in texts["materials"]
    assert "承诺办结时限为5个工作日" in texts["time_limit"] and "秒批" in texts["time_limit"]
    assert texts["fees"] == "高龄津贴申领不收取任何费用。"
    assert "零跑动" in texts["handling"]


def test_answer_puts_the_asked_section_of_the_best_item_first():
    found = answers.answer("换身份证要交多少钱", docs(), limit=3)
    assert (found[0].name, found[0].section) == ("居民身份证换领", "fees")
    assert found[0].score == 1.0 and all(a.score <= 1.0 for a in found)
    assert "工本费20元" in found[0].text


def test_one_answer_per_item_name_across_counties():
    twin = {**docs()[0], "item_code": "62052200MZ-GF-0001"}
    found = answers.answer("高龄津贴多久", [*docs(), twin], limit=5)
    assert len({(a.name, a.section) for a in found}) == len(found)
