"""Config validation and safe YAML, under the name the model and controller code has always used;
they live in the bottom layer of the core (:mod:`admn_ros.datasets.validate`), which the dataset
code below ``fusion`` reads configs with too."""
from admn_ros.datasets.validate import (MAX_ALIAS_EXPANSION, ConfigError, Each, OneOf, Range,
                                        at_least, build, check_limits, coerce, fraction,
                                        from_yaml, one_of, parse_list, positive, read_yaml,
                                        safe_load, yaml_problem)

__all__ = ['MAX_ALIAS_EXPANSION', 'ConfigError', 'Each', 'OneOf', 'Range', 'at_least', 'build',
           'check_limits', 'coerce', 'fraction', 'from_yaml', 'one_of', 'parse_list',
           'positive', 'read_yaml', 'safe_load', 'yaml_problem']
