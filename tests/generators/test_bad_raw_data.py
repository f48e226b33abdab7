"""Bad raw data never converts silently (issue #12, data tools): a malformed S3DIS annotation file
is an error naming the file, the line and the expected row format; a re-run after a raw file
changed rebuilds what it fed instead of reusing the stale output (S3DIS and ScanNet); the synthetic
generators' command lines refuse settings that would write an unusable dataset."""
import json
import os

import numpy as np
import pytest

from influencer_data import s3dis, scannet
from influencer_data.s3dis import AnnotationFormatError
from influencer_data.sources import RawDataError
from tests import load_script

s3dis_cli = load_script('datasets/prepare_s3dis.py')
scannet_cli = load_script('datasets/prepare_scannet.py')

ROW = '1.000 2.000 3.000 10 20 30'


def _room(root, area, room, objects):
    """Raw S3DIS room: {object name: annotation text}; returns the Annotations folder."""
    ann = os.path.join(root, s3dis.RAW_DIRNAME, f'Area_{area}', room, 'Annotations')
    os.makedirs(ann, exist_ok=True)
    for name, text in objects.items():
        with open(os.path.join(ann, f'{name}.txt'), 'w') as f:
            f.write(text)
    return ann


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return ''.join(' '.join(f'{v:.3f}' for v in rng.uniform(0, 3, 3)) + ' '
                   + ' '.join(str(c) for c in rng.integers(0, 256, 3)) + '\n' for _ in range(n))


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)


@pytest.mark.parametrize('text, line, problem', [
    ('1.0 2.0 3.0\n4.0 5.0 6.0\n', 1, '3 values'),                   # xyz only: the object had 0 points
    (f'{ROW}\n{ROW} 7\n{ROW}\n', 2, '7 values'),                       # an extra column was cut off
    (f'{ROW}\n{ROW}\n1.0 2.0\n', 3, '2 values'),                       # pandas pads this row with NaN
    (f'{ROW}\n1.0 e 3.0 10 20 30\n', 2, "'e' is not a number"),        # was: could not convert string to float
    (f'{ROW}\n1.0 2.0 nan 10 20 30\n', 2, 'not finite'),
])
def test_malformed_annotation_rows_name_file_line_and_format(tmp_path, text, line, problem):
    path = str(tmp_path / 'chair_1.txt')
    _write(path, text)
    with pytest.raises(AnnotationFormatError) as info:
        s3dis.read_annotation_txt(path)
    msg = str(info.value)
    assert f'{path}, line {line}:' in msg and problem in msg, msg
    assert '6 numbers (x y z r g b)' in msg and 're-run the conversion' in msg
    assert isinstance(info.value, RawDataError) and isinstance(info.value, ValueError)


def test_empty_annotation_file_is_an_error(tmp_path):
    path = str(tmp_path / 'table_1.txt')
    _write(path, '\n\n')
    with pytest.raises(AnnotationFormatError, match='table_1.txt: no rows: the object would have no points'):
        s3dis.read_annotation_txt(path)


def test_the_known_stray_byte_still_separates_values(tmp_path):
    path = str(tmp_path / 'ceiling_1.txt')
    _write(path, f'{ROW}\n1.000 2.000\x103.000 10 20 30\n')
    np.testing.assert_array_equal(s3dis.read_annotation_txt(path), [[1, 2, 3, 10, 20, 30]] * 2)


def test_prepare_s3dis_cli_reports_the_bad_file(tmp_path, capsys):
    root = str(tmp_path / 's3dis')
    ann = _room(root, 1, 'office_1', {'chair_1': _rows(5), 'wall_1': '1.0 2.0 3.0\n'})
    rc = s3dis_cli.main(['--data-root', root, '--areas', '1', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert rc == 2
    assert f'error: {os.path.join(ann, "wall_1.txt")}, line 1: 3 values' in err and 'x y z r g b' in err


def _convert(root, out, capsys, **kw):
    s3dis.convert(root, out, areas=(1,), verbose=True, **kw)
    return capsys.readouterr().out


def test_rerun_rebuilds_rooms_whose_raw_files_changed(tmp_path, capsys):
    root, out = str(tmp_path / 's3dis'), str(tmp_path / 'out')
    ann = _room(root, 1, 'office_1', {'chair_1': _rows(5), 'floor_1': _rows(7, 1)})
    _room(root, 1, 'WC_1', {'floor_1': _rows(4, 2)})
    log = _convert(root, out, capsys)
    assert 'converting Area_1_office_1' in log and 'converting Area_1_WC_1' in log
    assert len(s3dis.read_room(out, 'Area_1_office_1')[0]) == 12
    # nothing changed: both reused, and the log says how to rebuild anyway
    log = _convert(root, out, capsys)
    assert 'converting' not in log and 'reused 2 rooms converted earlier' in log and '--force' in log
    # a fixed raw file: that room (only) is converted again, and the reason is given
    _write(os.path.join(ann, 'chair_1.txt'), _rows(9, 3))
    log = _convert(root, out, capsys)
    assert 'converting Area_1_office_1 (chair_1.txt changed since the last conversion)' in log, log
    assert 'converting Area_1_WC_1' not in log and 'reused 1 rooms' in log
    assert len(s3dis.read_room(out, 'Area_1_office_1')[0]) == 16
    info = s3dis.read_room(out, 'Area_1_office_1')
    assert np.bincount(info[1]).tolist() == [0, 9, 7]        # instance sizes of the new files
    # an added object file counts too
    _write(os.path.join(ann, 'table_1.txt'), _rows(3, 4))
    log = _convert(root, out, capsys)
    assert 'converting Area_1_office_1 (table_1.txt added since the last conversion)' in log
    assert len(s3dis.read_room(out, 'Area_1_office_1')[0]) == 19
    # superpoints of another method are not reused either
    _convert(root, out, capsys, superpoints=True, superpoint_method='voxel')
    log = _convert(root, out, capsys, superpoints=True, superpoint_method='graph')
    assert "superpoints was 'voxel', now 'graph'" in log


def test_rooms_converted_before_the_record_are_judged_by_time(tmp_path, capsys):
    root, out = str(tmp_path / 's3dis'), str(tmp_path / 'out')
    ann = _room(root, 1, 'office_1', {'chair_1': _rows(5)})
    _convert(root, out, capsys)
    os.remove(os.path.join(out, s3dis.SOURCES_NAME))       # as written by the converter before it kept one
    assert 'reused 1 rooms' in _convert(root, out, capsys)  # raw older than the bins: adopted
    os.remove(os.path.join(out, s3dis.SOURCES_NAME))
    later = os.stat(os.path.join(out, 'points', 'Area_1_office_1.bin')).st_mtime + 10
    os.utime(os.path.join(ann, 'chair_1.txt'), (later, later))
    log = _convert(root, out, capsys)
    assert 'converting Area_1_office_1 (chair_1.txt newer than the converted files)' in log


def test_scannet_bad_axis_alignment_names_the_file(tmp_path):
    path = str(tmp_path / 'scene0000_00.txt')
    _write(path, 'axisAlignment = 1 0 0 0 0 1 0 0 0 0 1\n')
    with pytest.raises(RawDataError, match=r'scene0000_00.txt: axisAlignment is not 16 numbers .*download the file'):
        scannet.read_axis_alignment(path)


def test_scannet_label_map_without_its_columns_or_rows_is_an_error(tmp_path):
    good = tmp_path / 'labels.tsv'
    good.write_text('id\traw_category\tnyu40id\n1\twall\t1\n2\tchair\t5\n3\tunknown\t\n')
    assert scannet.read_label_map(str(good)) == {'wall': 1, 'chair': 5}  # rows without an id skipped
    comma = tmp_path / 'comma.tsv'
    comma.write_text('id,raw_category,nyu40id\n1,wall,1\n')
    with pytest.raises(RawDataError, match=r"comma.tsv: no column 'raw_category', 'nyu40id' in its header"):
        scannet.read_label_map(str(comma))
    empty = tmp_path / 'empty.tsv'
    empty.write_text('id\traw_category\tnyu40id\n1\twall\tx\n')
    with pytest.raises(RawDataError, match="no row has an integer 'nyu40id'"):
        scannet.read_label_map(str(empty))


def test_scannet_rerun_rebuilds_scenes_whose_raw_files_changed(tmp_path, capsys):
    pytest.importorskip('plyfile')
    from test_synthetic_3d import _fake_scannet

    root = str(tmp_path / 'scannet')
    scene, *_ = _fake_scannet(root)
    scannet.convert(root, splits=('train',), superpoints='segs_json')
    capsys.readouterr()
    scannet.convert(root, splits=('train',), superpoints='segs_json')
    assert 'reused 1 scenes converted earlier' in capsys.readouterr().out
    agg = os.path.join(root, 'scans', scene, f'{scene}.aggregation.json')
    with open(agg) as f:
        groups = json.load(f)
    groups['segGroups'] = groups['segGroups'][:2]             # the table removed
    _write(agg, json.dumps(groups))
    scannet.convert(root, splits=('train',), superpoints='segs_json')
    out = capsys.readouterr().out
    assert f'{scene} ({scene}.aggregation.json changed since the last conversion)' in out, out
    ins = np.fromfile(os.path.join(root, 'instance_mask', f'{scene}.bin'), np.int64)
    assert ins.max() == 2
    # a malformed axisAlignment stops the command line with the file named
    _write(os.path.join(root, 'scans', scene, f'{scene}.txt'), 'axisAlignment = 1 2 x\n')
    assert scannet_cli.main(['--data-root', root, '--splits', 'train', '--superpoints', 'segs_json',
                             '--force']) == 2
    assert f'{scene}.txt: axisAlignment is not 16 numbers' in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--rooms-per-area', '0'], '--rooms-per-area: must be >= 1, got 0'),
    (['--points', '0'], '--points: must be >= 1, got 0'),
    (['--areas', '9'], "--areas: invalid choice: 9"),
])
def test_synthetic_3d_cli_refuses_an_unusable_dataset(tmp_path, capsys, args, message):
    syn_cli = load_script('datasets/prepare_synthetic_3d.py')
    with pytest.raises(SystemExit) as info:
        syn_cli.parse_args(['--out', str(tmp_path / 'rooms'), *args])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'rooms').exists()


@pytest.mark.parametrize('args, message', [
    (['--train', '0'], '--train: must be >= 1, got 0'),
    (['--size', '0'], '--size: must be >= 32, got 0'),
])
def test_synthetic_2d_cli_refuses_an_unusable_dataset(tmp_path, capsys, args, message):
    pytest.importorskip('cv2')
    syn2_cli = load_script('datasets/prepare_synthetic_2d.py')
    with pytest.raises(SystemExit) as info:
        syn2_cli.main(['--out', str(tmp_path / 'coco'), *args])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'coco').exists()
