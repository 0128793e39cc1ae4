"""Channel credentials: masked in what the daemon says, stripped from what leaves the store (bundles)."""

from __future__ import annotations

import json

import pytest

from provisiond.domain.urls import mask, strip_credentials


@pytest.mark.parametrize(("url", "masked", "stripped"), [
    ("https://ghp_TOKEN@host/c", "https://***@host/c", "https://host/c"),
    ("https://alice:s3cret@host/c/linux-64/x.conda", "https://***@host/c/linux-64/x.conda",
     "https://host/c/linux-64/x.conda"),
    ("https://alice:s3@cret@host/c", "https://***@host/c", "https://host/c"),  # an unencoded "@"
    ("https://alice:s3cret@host", "https://***@host", "https://host"),
    ("https://alice:s3cret@host:8443?x=1", "https://***@host:8443?x=1", "https://host:8443?x=1"),
    ("https://host/t/tk-s3cret/c/noarch/x.conda", "https://host/t/***/c/noarch/x.conda",
     "https://host/c/noarch/x.conda"),
    ("https://u:p@host/t/a/t/b/c", "https://***@host/t/***/t/***/c", "https://host/c"),
    ("git+https://alice:s3cret@github.com/o/r@0123abc", "git+https://***@github.com/o/r@0123abc",
     "git+https://github.com/o/r@0123abc"),
    ("https://host/path@not-userinfo", "https://host/path@not-userinfo", "https://host/path@not-userinfo"),
])
def test_mask_and_strip(url: str, masked: str, stripped: str) -> None:
    assert mask(url) == masked
    assert strip_credentials(url) == stripped
    assert mask(f"see {url} and more") == f"see {masked} and more"
    assert strip_credentials(f"see {url} and more") == f"see {stripped} and more"


def test_strip_touches_only_urls() -> None:
    # Paths that look like a token segment, file: URLs and e-mail addresses are not URLs with credentials.
    for text in ("lib/t/x/libfoo.so", "file:///home/me/t/x/channel/", "mail alice@example.org", "no url"):
        assert strip_credentials(text) == text
    # Inside JSON text, a URL ends at its closing quote: the document stays valid.
    doc = json.dumps({"url": "https://alice:s3cret@h/c/x.conda", "channel": "https://alice:s3cret@h/c/",
                      "note": "alice@h"})
    assert json.loads(strip_credentials(doc)) == {"url": "https://h/c/x.conda", "channel": "https://h/c/",
                                                  "note": "alice@h"}
    assert json.loads(mask(doc))["url"] == "https://***@h/c/x.conda"


@pytest.mark.parametrize(("url", "canonical"), [
    ("https://conda.anaconda.org/c/linux-64/a-1-0.conda", "https://conda.anaconda.org/c/linux-64/a-1-0.conda"),
    ("http://conda.anaconda.org/c/linux-64/a-1-0.conda", "https://conda.anaconda.org/c/linux-64/a-1-0.conda"),
    ("HTTPS://Conda.Anaconda.ORG:443/c//linux-64/a%2Bb-1-0.conda", "https://conda.anaconda.org/c/linux-64/a+b-1-0.conda"),
    ("https://u:p@host/t/tok/c/noarch/x-1-0.conda#abc", "https://host/c/noarch/x-1-0.conda"),
    ("https://host:8443/c/noarch/x-1-0.conda", "https://host:8443/c/noarch/x-1-0.conda"),
    ("file://localhost/srv/c/noarch/x-1-0.conda", "file:///srv/c/noarch/x-1-0.conda"),
    ("file:///srv/t/x/noarch/x-1-0.conda", "file:///srv/t/x/noarch/x-1-0.conda"),  # no tokens in file: URLs
])
def test_canonical_url(url: str, canonical: str) -> None:
    from provisiond.domain.urls import canonical_url

    assert canonical_url(url) == canonical
    assert canonical_url(canonical) == canonical
