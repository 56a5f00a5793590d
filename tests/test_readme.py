"""The README stays short and every command in it is run by a test or the demo.

Each command line of the README's bash blocks must parse with the real `admn` parser and be
listed below with the tests that run it (checked to exist), so a new README command needs a test.
"""
import re
import shlex
from pathlib import Path

import pytest

from admn_ros.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'

# command prefix -> tests (file::function) that run it (or the code path behind it, shrunk).
RUN_BY = {
    'make demo': ['test_demo.py::test_a_short_demo_runs_through_the_graph_and_reports_the_shift'],
    'make test': ['.ci/run'],
    'admn bringup admn': ['test_process_faults.py::test_killed_nodes_never_stop_fusion_and_a_killed_fusion_comes_back'],
    'admn bringup noise_experiment': ['test_graph.py::test_bringup_processes_talk_and_stop_cleanly_on_sigint',
                                      'test_demo.py::test_a_short_demo_runs_through_the_graph_and_reports_the_shift'],
    'admn bringup replay_eval': ['test_bag_tools.py::test_recorded_bag_offline_and_through_ros_agree_exactly',
                                 'test_ros_e2e.py::test_bag_replay_on_sim_time_scores_exactly_like_offline_evaluation'],
    'admn bag record': ['test_bag_tools.py::test_record_info_and_offline_eval'],
    'admn bag eval': ['test_bag_tools.py::test_record_info_and_offline_eval',
                      'test_bag_tools.py::test_recorded_bag_offline_and_through_ros_agree_exactly'],
    'admn eval': ['test_conditions.py::test_eval_by_condition_cli_writes_json_summary_and_plots',
                  'test_conditions.py::test_recorded_tags_survive_evaluation',
                  'test_eval.py::test_eval_writes_the_documented_json_table_and_plots'],
    'admn experiment noise-sweep': ['test_sweep.py::test_one_csv_row_per_cell_with_the_numbers_of_admn_eval',
                                    'test_sweep.py::test_killed_command_resumes_with_resume'],
    'admn pretrain': ['test_pretrain.py::test_the_pretrain_command_runs_from_a_yaml_and_refuses_unknown_data_in_one_line'],
    'admn train defaults': ['test_shipped_models.py::test_train_defaults_runs_both_stages_from_the_shipped_configs'],
    'admn data check': ['test_small_data.py::test_data_check_summarises_a_consistent_folder',
                        'test_small_data.py::test_data_check_refuses_each_inconsistency_with_its_reason'],
    'admn demo': ['test_demo.py::test_a_short_demo_runs_through_the_graph_and_reports_the_shift',
                  'test_shipped_models.py::test_the_shipped_default_comes_first_and_the_cache_only_when_asked'],
}


def readme_commands():
    """Command lines of the README's bash blocks, continuation lines joined, comments dropped."""
    text = README.read_text(encoding='utf-8')
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        joined = block.replace('\\\n', ' ')
        for line in joined.splitlines():
            line = line.split('#', 1)[0].strip()
            if line:
                commands.append(line)
    return commands


def _prefix(command: str) -> str:
    words = [w for w in shlex.split(command) if '=' not in w or w.startswith('-')]
    return next(p for p in sorted(RUN_BY, key=len, reverse=True)
                if words[:len(p.split())] == p.split())


def test_readme_is_short():
    assert len(README.read_text(encoding='utf-8').splitlines()) < 200


def test_readme_has_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize('command', readme_commands())
def test_every_readme_command_parses_and_is_run_by_a_test(command):
    words = shlex.split(command)
    while words and re.fullmatch(r'[A-Z_]+=\S*', words[0]):    # environment assignments
        words.pop(0)
    if words[0] == 'admn':
        args, unknown = build_parser().parse_known_args(words[1:])
        assert not unknown or getattr(args, 'passthrough', False), unknown
    else:
        assert words[0] == 'make' and words[1] in ('demo', 'test')
    prefix = _prefix(' '.join(words))
    for ref in RUN_BY[prefix]:
        if '::' not in ref:
            assert (ROOT / ref).is_file(), ref
            continue
        file, name = ref.split('::')
        source = (ROOT / 'tests' / file).read_text(encoding='utf-8')
        assert re.search(rf'^def {name}\(', source, re.M), f'{ref} (runs {prefix!r}) is gone'
