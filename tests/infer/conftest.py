import pytest

from tests.infer.conjugate import Conjugate, make_conjugate


@pytest.fixture(scope="session")
def conjugate() -> Conjugate:
    return make_conjugate()
