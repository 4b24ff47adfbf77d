"""The list of every service's setting names, and how a misspelt name is told from another service's."""

import pytest

from api.settings import ApiSettings
from etl_common import setting_names
from extractor.settings import ExtractorSettings
from saver.settings import SaverSettings
from transformer.settings import TransformerSettings

CLASSES = (ExtractorSettings, TransformerSettings, SaverSettings, ApiSettings)


def names(cls: type) -> set[str]:
    return {"ETL_" + name.upper() for name in cls.model_fields}


def test_the_list_is_every_service_setting():
    assert setting_names.SETTINGS == set().union(*(names(cls) for cls in CLASSES))


@pytest.mark.parametrize(
    ("cls", "given", "expected"),
    [
        (ApiSettings, "ETL_API_PROT", "ETL_API_PORT"),
        (ExtractorSettings, "ETL_PAGE_SZIE", "ETL_PAGE_SIZE"),
        (TransformerSettings, "ETL_PII_POLCY", "ETL_PII_POLICY"),
        (SaverSettings, "ETL_SFTP_HOTS", "ETL_SFTP_HOST"),
        (ExtractorSettings, "ETL_REDIS_ULR", "ETL_REDIS_URL"),
    ],
)
def test_a_misspelt_own_setting_is_named_with_the_suggestion(cls, given, expected):
    assert setting_names.misspelt([given], names(cls)) == {given: expected}


@pytest.mark.parametrize(
    ("cls", "given"),
    [
        (ExtractorSettings, "ETL_API_PORT"),  # another service's setting: one .env is shared
        (ExtractorSettings, "ETL_API_PROT"),  # another service's misspelt setting: the API warns
        (ApiSettings, "ETL_PAGE_SZIE"),
        (SaverSettings, "ETL_SERVICE"),  # set by the image
        (ApiSettings, "ETL_SOMETHING_ELSE_ENTIRELY"),  # close to nothing
    ],
)
def test_other_services_names_and_far_names_are_not_flagged(cls, given):
    assert setting_names.misspelt([given], names(cls)) == {}
