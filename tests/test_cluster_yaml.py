"""cluster.yaml passes Ray's own launcher validation and has the shape the README promises."""

import pytest
import yaml
from conftest import ROOT
from ray._private.label_utils import validate_node_label_syntax, validate_node_labels
from ray.autoscaler._private.util import prepare_config, validate_config


@pytest.fixture(scope="module")
def config():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = prepare_config(raw)  # what `ray up` does: merge the provider defaults, then validate
    validate_config(prepared)
    return prepared


def test_node_groups(config):
    nodes = config["available_node_types"]
    assert set(nodes) == {"head", "a100", "l4"}
    assert config["head_node_type"] == "head"
    assert nodes["head"]["resources"] == {"CPU": 0}  # no task or actor on the head
    for group, accelerator in (("a100", "A100"), ("l4", "L4")):
        node = nodes[group]
        assert 0 <= node["min_workers"] <= node["max_workers"]
        assert node["resources"]["GPU"] >= 1
        assert node["resources"][f"accelerator_type:{accelerator}"] == node["resources"]["GPU"]
        assert node["labels"]["accelerator"] == accelerator
        validate_node_labels(node["labels"])  # what `ray start` checks: no reserved ray.io/ prefix
        validate_node_label_syntax(node["labels"])
    assert config["max_workers"] == nodes["a100"]["max_workers"] + nodes["l4"]["max_workers"]
    assert config["idle_timeout_minutes"] > 0


def test_docker_and_setup_install_the_project(config):
    assert config["docker"]["image"].startswith("rayproject/ray:") and "gpu" in config["docker"]["image"]
    setup = "\n".join(config["setup_commands"])
    assert "pip install -q torch==" in setup  # pinned before the project, as in the Makefile
    assert "cd /home/ray/icc && pip install -q -e ." in setup
    assert config["file_mounts"]["/home/ray/icc"] == "."


def test_nothing_but_ssh_faces_the_internet(config):
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    # The AWS provider's default security group opens only port 22 to the internet; any extra
    # inbound rule would be listed here.
    assert not config["provider"].get("security_group", {}).get("IpPermissions")


def test_validation_catches_a_broken_config(config):
    broken = {**config, "available_node_types": {**config["available_node_types"], "l4": {"min_workers": 0}}}
    with pytest.raises(Exception, match="required property"):
        validate_config(broken)
