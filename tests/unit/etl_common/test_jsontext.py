"""Tolerant JSON text: containers cut out below a depth come back as they were written."""

from etl_common import jsontext


def test_cut_deep_puts_the_text_back():
    value, cuts = jsontext.loads_tolerant('{"a":[[[["x"]]]],"b":1}', 2)
    assert value["a"] == [jsontext.DEEP_MARK + "0"] and cuts == ['[[["x"]]]']
    assert jsontext.dumps_exact(value, cuts) == '{"a":[[[["x"]]]],"b":1}'
