"""An object that moved: one ``disappeared`` and one ``appeared`` detection, linked by
``moved_with`` only when nothing else could be the other half."""
from pipeline.detect.blobs import Blob
from pipeline.detect.classify import Detection, link_moves

RES = (0.5, 0.5)


def _det(id_, change, col, row, length=21.0, width=14.0, klass="combat-jet"):
    blob = Blob((0, 0, 1, 1), 100, (col, row), ((0, 0),) * 4, length, width, length * width, 0.0,
                5.0, 9.0)
    return Detection(blob, klass, "aircraft", change, 0.9, 0.8, 1.0, 0.1, id_)


def _links(dets, **kw):
    kw = {"max_distance_m": 300.0, "size_tolerance": 0.15, **kw}
    return {d.id: d.moved_with for d in link_moves(dets, RES, **kw) if d.moved_with}


def test_one_jet_taxied_is_linked_both_ways():
    dets = [_det("d001", "disappeared", 100, 100), _det("d002", "appeared", 400, 100),
            _det("d003", "appeared", 120, 500, length=60, width=55, klass="large-transport")]
    assert _links(dets) == {"d001": "d002", "d002": "d001"}


def test_ambiguous_moves_are_not_linked():
    # two like jets left and one arrived: which one moved cannot be told
    dets = [_det("d001", "disappeared", 100, 100), _det("d002", "disappeared", 200, 100),
            _det("d003", "appeared", 400, 100)]
    assert _links(dets) == {}


def test_other_class_size_or_too_far_is_not_a_move():
    assert _links([_det("a", "disappeared", 0, 0), _det("b", "appeared", 10, 0, klass="helicopter")]) == {}
    assert _links([_det("a", "disappeared", 0, 0), _det("b", "appeared", 10, 0, length=26)]) == {}
    assert _links([_det("a", "disappeared", 0, 0), _det("b", "appeared", 700, 0)]) == {}  # 350 m
    assert _links([_det("a", "disappeared", 0, 0), _det("b", "appeared", 700, 0)],
                  max_distance_m=400) == {"a": "b", "b": "a"}
