"""A small starter catalog: enough for the walking skeleton, the portal and the first tests.

The full generated catalog (40+ departments, 500+ items) comes with the catalog issue.
"""

from __future__ import annotations

from typing import Any

REGION = "620524"
REGION_NAME = "武山县"

DEPARTMENTS = [
    {"code": f"{REGION}MZ", "name": f"{REGION_NAME}民政局", "region_code": REGION},
    {"code": f"{REGION}SC", "name": f"{REGION_NAME}市场监督管理局", "region_code": REGION},
    {"code": f"{REGION}GA", "name": f"{REGION_NAME}公安局", "region_code": REGION},
    {"code": f"{REGION}RS", "name": f"{REGION_NAME}人力资源和社会保障局", "region_code": REGION},
]

_CONTACT = {"consultation_phone": "0938-12345", "complaint_phone": "12345"}


def seed_items() -> list[dict[str, Any]]:
    return [
        {
            "item_code": f"{REGION}00MZ-GF-0001",
            "name": "高龄津贴申领",
            "summary": "为年满80周岁的本县户籍老年人按月发放高龄津贴，符合条件的网上申请即时审批。",
            "keywords": ["老年人", "老人", "高龄", "津贴", "补贴", "养老", "80岁"],
            "department_code": f"{REGION}MZ",
            "item_type": "benefit",
            "legal_basis": ["《中华人民共和国老年人权益保障法》第三十三条", "《甘肃省高龄老人津贴发放管理办法》"],
            "applicant_types": ["citizen"],
            "acceptance_conditions": ["年满80周岁", "具有本县户籍"],
            "materials": [
                {
                    "code": "household_register",
                    "name": "居民户口簿",
                    "required": False,
                    "source": "certificate",
                    "certificate_type": "household_register",
                },
            ],
            "process": [
                {"step": 1, "name": "网上申请", "days": 0},
                {"step": 2, "name": "自动审批", "days": 0},
                {"step": 3, "name": "按月发放", "days": 5},
            ],
            "legal_days": 20,
            "promised_days": 5,
            "fees": [],
            "handling_mode": "online",
            "visits_required": 0,
            **_CONTACT,
            "form_schema": {
                "type": "object",
                "required": ["bank_account", "contact_phone"],
                "properties": {
                    "bank_account": {"type": "string", "pattern": "^[0-9]{16,19}$", "title": "社保卡银行账号"},
                    "contact_phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$", "title": "联系电话"},
                },
                "additionalProperties": False,
            },
            "auto_approval": {
                "enabled": True,
                "rules": [
                    {
                        "id": "age_80",
                        "description": "申请人年满80周岁",
                        "expression": "applicant.age >= 80",
                        "on_fail": "reject",
                    },
                    {
                        "id": "local_resident",
                        "description": "申请人为本县户籍",
                        "expression": f'applicant.region_code == "{REGION}"',
                        "on_fail": "manual_review",
                    },
                ],
            },
            "issues_certificate": None,
        },
        {
            "item_code": f"{REGION}00SC-XK-0001",
            "name": "企业名称自主申报",
            "summary": "企业设立前自主申报企业名称，系统比对通过后出具企业名称自主申报告知书。",
            "keywords": ["企业名称", "公司名称", "起名", "核名", "名称预先核准", "字号"],
            "department_code": f"{REGION}SC",
            "item_type": "licensing",
            "legal_basis": ["《企业名称登记管理规定》"],
            "applicant_types": ["enterprise", "citizen"],
            "acceptance_conditions": ["名称不含禁用字词", "名称由行政区划、字号、行业、组织形式组成"],
            "materials": [],
            "process": [{"step": 1, "name": "网上申报", "days": 0}, {"step": 2, "name": "系统比对", "days": 0}],
            "legal_days": 3,
            "promised_days": 1,
            "fees": [],
            "handling_mode": "online",
            "visits_required": 0,
            **_CONTACT,
            "form_schema": {
                "type": "object",
                "required": ["proposed_name", "industry"],
                "properties": {
                    "proposed_name": {"type": "string", "minLength": 4, "maxLength": 50, "title": "拟申请名称"},
                    "industry": {"type": "string", "title": "行业"},
                },
                "additionalProperties": False,
            },
            "auto_approval": {
                "enabled": True,
                "rules": [
                    {
                        "id": "no_forbidden_words",
                        "description": "名称不含“中国”“国家”等字样",
                        "expression": '!form.proposed_name.contains("中国") && !form.proposed_name.contains("国家")',
                        "on_fail": "reject",
                    },
                    {
                        "id": "has_region",
                        "description": "名称冠以行政区划",
                        "expression": f'form.proposed_name.startsWith("{REGION_NAME}")',
                        "on_fail": "manual_review",
                    },
                ],
            },
            "issues_certificate": {"type": "name_reservation", "name": "企业名称自主申报告知书", "valid_days": 60},
        },
        {
            "item_code": f"{REGION}00SC-XK-0002",
            "name": "企业设立登记",
            "summary": "设立有限责任公司等企业，凭名称自主申报告知书申请登记，核准后颁发电子营业执照。",
            "keywords": ["开公司", "注册公司", "营业执照", "执照", "公司注册", "办执照", "开办企业"],
            "department_code": f"{REGION}SC",
            "item_type": "licensing",
            "legal_basis": ["《中华人民共和国市场主体登记管理条例》"],
            "applicant_types": ["enterprise", "citizen"],
            "acceptance_conditions": ["已取得企业名称自主申报告知书", "住所、经营范围符合规定"],
            "materials": [
                {
                    "code": "name_reservation",
                    "name": "企业名称自主申报告知书",
                    "required": True,
                    "source": "certificate",
                    "certificate_type": "name_reservation",
                },
            ],
            "process": [{"step": 1, "name": "网上申请", "days": 0}, {"step": 2, "name": "核准登记", "days": 1}],
            "legal_days": 15,
            "promised_days": 1,
            "fees": [],
            "handling_mode": "online",
            "visits_required": 0,
            **_CONTACT,
            "form_schema": {
                "type": "object",
                "required": ["registered_capital", "business_scope"],
                "properties": {
                    "registered_capital": {"type": "number", "minimum": 0, "title": "注册资本（万元）"},
                    "business_scope": {"type": "string", "minLength": 2, "title": "经营范围"},
                },
                "additionalProperties": False,
            },
            "auto_approval": {
                "enabled": True,
                "rules": [
                    {
                        "id": "holds_name_reservation",
                        "description": "已持有有效的企业名称自主申报告知书",
                        "expression": '"name_reservation" in certificates && "name_reservation" in materials',
                        "on_fail": "reject",
                    },
                    {
                        "id": "real_name",
                        "description": "申请人已通过实名认证",
                        "expression": "applicant.assurance_level >= 2",
                        "on_fail": "manual_review",
                    },
                ],
            },
            "issues_certificate": {"type": "business_licence", "name": "营业执照（电子）", "valid_days": None},
        },
        {
            "item_code": f"{REGION}00GA-QR-0001",
            "name": "居民身份证换领",
            "summary": "居民身份证有效期满、损坏或登记项目变更时，到公安机关申请换领新证。",
            "keywords": ["身份证", "换身份证", "身份证到期", "补办身份证", "二代证"],
            "department_code": f"{REGION}GA",
            "item_type": "confirmation",
            "legal_basis": ["《中华人民共和国居民身份证法》"],
            "applicant_types": ["citizen"],
            "acceptance_conditions": ["居民身份证有效期满或即将期满"],
            "materials": [{"code": "photo", "name": "数码照片回执", "required": False, "source": "applicant_upload"}],
            "process": [
                {"step": 1, "name": "预约", "days": 0},
                {"step": 2, "name": "现场采集", "days": 1},
                {"step": 3, "name": "制证", "days": 20},
            ],
            "legal_days": 60,
            "promised_days": 20,
            "fees": [{"name": "工本费", "amount": 20.0, "basis": "发改价格〔2003〕2322号"}],
            "handling_mode": "one_visit",
            "visits_required": 1,
            **_CONTACT,
            "form_schema": {
                "type": "object",
                "properties": {"reason": {"type": "string", "enum": ["expired", "damaged", "lost"]}},
            },
            "auto_approval": {"enabled": False, "rules": []},
            "issues_certificate": None,
        },
        {
            "item_code": f"{REGION}00RS-GF-0001",
            "name": "失业保险金申领",
            "summary": "参加失业保险且非因本人意愿中断就业的人员，按规定申领失业保险金。",
            "keywords": ["失业金", "失业", "下岗", "失业补助", "没工作"],
            "department_code": f"{REGION}RS",
            "item_type": "benefit",
            "legal_basis": ["《失业保险条例》"],
            "applicant_types": ["citizen"],
            "acceptance_conditions": ["非因本人意愿中断就业", "已办理失业登记并有求职要求"],
            "materials": [],
            "process": [{"step": 1, "name": "网上申请", "days": 0}, {"step": 2, "name": "审核", "days": 5}],
            "legal_days": 15,
            "promised_days": 5,
            "fees": [],
            "handling_mode": "online",
            "visits_required": 0,
            **_CONTACT,
            "form_schema": {
                "type": "object",
                "required": ["last_employer", "months_insured"],
                "properties": {
                    "last_employer": {"type": "string", "minLength": 2},
                    "months_insured": {"type": "integer", "minimum": 0},
                },
            },
            "auto_approval": {
                "enabled": True,
                "rules": [
                    {
                        "id": "insured_12_months",
                        "description": "累计缴费满12个月",
                        "expression": "form.months_insured >= 12",
                        "on_fail": "reject",
                    },
                    {
                        "id": "reviewed",
                        "description": "离职原因需人工核实",
                        "expression": "false",
                        "on_fail": "manual_review",
                    },
                ],
            },
            "issues_certificate": None,
        },
    ]
