"""docs/your_data.md runs as written: its files are written out and its ``admn`` commands run in
order in a fresh folder, on a small generated bag (40 s instead of 120 s) and one epoch per
training (``--epochs 1`` appended): record -> import -> check -> fine-tune stage 1 from the shipped
model -> controller -> evaluate by recorded condition -> the bag scored with the fine-tuned model
through the nodes (ROS test) and offline (the ``ros2`` lines are for the robot). One epoch may end
at chance: then the controller step must refuse it, and runs with ``--force``."""
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from admn_ros.cli import main as admn

DOC = Path(__file__).resolve().parent.parent / 'docs' / 'your_data.md'
QUICKER = {'--duration 120': '--duration 40'}
TRAINING = ('admn train stage1', 'admn train controller')
THROUGH_ROS = ' --through-ros --compare --rate 4'


def doc_files_and_commands(text: str):
    files = dict(re.findall(r'<!-- file: (\S+) -->\n```\w*\n(.*?)```', text, re.S))
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip().startswith('admn ')]
    return files, commands


def at_chance() -> bool:
    scores = Path('runs/my_robot/stage1/baseline.json')
    return scores.is_file() and not json.loads(scores.read_text())['left_chance']


@pytest.fixture(scope='module')
def walkthrough(tmp_path_factory):
    """Steps 1-5 of the page run in a fresh folder; returns (folder, their output, step 6)."""
    import torch
    files, commands = doc_files_and_commands(DOC.read_text(encoding='utf8'))
    assert set(files) == {'blocked_depth.yaml', 'my_stage1.yaml', 'my_controller.yaml'}
    steps = [' '.join(c.split()[1:3]) for c in commands]
    assert steps == ['bag record', 'data from-bag', 'data check', 'train stage1', 'train controller',
                     'eval --checkpoint', 'bag eval'], steps
    root = tmp_path_factory.mktemp('your_data')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    log = root / 'output.txt'
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name, text in files.items():
            Path(name).write_text(text, encoding='utf8')
        import contextlib
        import io
        out = io.StringIO()
        for command in commands[:-1]:
            for slow, quick in QUICKER.items():
                command = command.replace(slow, quick)
            if command.startswith(TRAINING):
                command += ' --epochs 1 --no-progress'
            with contextlib.redirect_stdout(out):
                code = admn(shlex.split(command)[1:])
                if code and command.startswith('admn train controller') and at_chance():
                    code = admn(shlex.split(command)[1:] + ['--force'])   # refused, as it must be
            assert code == 0, command
    torch.set_num_threads(threads)
    log.write_text(out.getvalue())
    return root, out.getvalue(), commands[-1]


@pytest.mark.slow
def test_the_walkthrough_imports_fine_tunes_and_evaluates_by_recorded_condition(walkthrough, monkeypatch):
    root, out, node_step = walkthrough
    monkeypatch.chdir(root)
    # The import kept labels and the recorded depth occlusion, split per class in time order.
    from admn_ros.datasets.folder import load_folder
    test, classes = load_folder('data/my_robot', 'test')
    train, _ = load_folder('data/my_robot', 'train')
    assert len(classes) == 12 and len(train['label']) + len(test['label']) >= 60
    assert 0 < train['severity_depth'].mean() < 1 and train['severity_depth'].max() == 1.0
    # The check passed the import; stage 1 printed its recipe, its linear baseline and the small-
    # data search's choice, and started from the shipped model with a fresh head.
    assert 'train: ' in out and 'modalities: rgb+depth+audio' in out and '\nconsistent\n' in out
    assert 'recipe for ' in out and 'lr=0.0003 (fine-tuning' in out
    assert 'linear baseline (logistic regression' in out and 'small-data search chose freeze_blocks=' in out
    assert 'encoder:depth (' in out and 'fresh: head: new classes' in out
    assert 'validation accuracy: model ' in out
    # Evaluation by recorded condition: clean and the blocked depth camera, each scored.
    text = Path('runs/my_robot/eval_recorded.json').read_text()
    assert 'depth:blocked:1.0' in text and '"clean"' in text
    linear = [r for r in json.loads(text)['results'] if r['policy'] == 'linear']
    assert linear and all(r['metric'] is not None for r in linear)   # the baseline beside the model
    # Step 6 without ROS: the same command offline scores the bag with the fine-tuned controller.
    assert THROUGH_ROS in node_step
    assert admn(shlex.split(node_step.replace(THROUGH_ROS, ''))[1:]) == 0
    report = json.loads(Path('runs/my_robot/bag_eval/offline.json').read_text())
    assert 'controller.pt' in json.dumps(report) and report['cells'][0]['accuracy'] is not None


@pytest.mark.ros
def test_the_fine_tuned_model_runs_on_the_node_as_offline(walkthrough, monkeypatch):
    root, _, node_step = walkthrough
    monkeypatch.chdir(root)
    monkeypatch.setenv('ROS_DOMAIN_ID', str(160 + os.getpid() % 50))
    assert admn(shlex.split(node_step)[1:] + ['--namespace', f'yourdata_{os.getpid()}']) == 0
    agreement = json.loads(Path('runs/my_robot/bag_eval/agreement.json').read_text())
    (cell,) = agreement['cells']
    assert cell['ros_frames'] == cell['offline_frames'] > 0
    assert cell['same_class'] == cell['same_layers'] == cell['common_frames'], cell


def test_the_node_command_names_the_nodes_real_inputs():
    """The ros2 run line remaps inputs the fusion node really subscribes to; with audio_common
    input, the AudioInfo the audio cannot be decoded without comes along."""
    from admn_ros.wire import topics as T
    text = DOC.read_text(encoding='utf8')
    line = next(l for l in text.splitlines() if l.startswith('ros2 run admn_ros admn_fusion'))
    remapped = re.findall(r'-r (\S+):=', line)
    assert remapped and set(remapped) <= {T.RGB, T.DEPTH, T.AUDIO, T.AUDIO_STAMPED,
                                          T.AUDIO_STAMPED_INFO}
    if 'audio_input:=audio_common' in line:
        assert {T.AUDIO_STAMPED, T.AUDIO_STAMPED_INFO} <= set(remapped)
    assert 'model_path:=' in line
