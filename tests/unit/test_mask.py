from __future__ import annotations

from iam_proxy.core.redaction import mask_headers, mask_query_string


def test_headers_masked_but_scheme_kept():
    masked = mask_headers({"authorization": "Bearer abc.def.ghi", "cookie": "a=b", "x-api-key": "k",
                           "accept": "*/*"})
    assert masked == {"authorization": "Bearer ***", "cookie": "***", "x-api-key": "***", "accept": "*/*"}


def test_query_credentials_masked():
    assert mask_query_string("a=1&access_token=xyz&Code=c&b") == "a=1&access_token=***&Code=***&b"
