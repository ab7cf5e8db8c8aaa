"""A wheel (a non-editable install) ships configs/*.yaml as vreloc_tf/configs, and its vreloc_tf finds them there.

configs/ stays at the top of the repository (setup.py maps it with package_dir); a checkout or an
editable install reads it in place (tests/test_config.py).
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_ships_the_configs_and_resolves_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), src)
    for folder in ("configs", "vreloc_tf"):  # what the wheel needs for this check
        shutil.copytree(os.path.join(REPO, folder), src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=120)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(os.path.basename(n) for n in names if n.startswith("vreloc_tf/configs/"))
    assert shipped == sorted(os.listdir(os.path.join(REPO, "configs"))) and "tiny.yaml" in shipped
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # -S: no .pth files, so the editable install of this checkout does not shadow the unpacked wheel
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), sysconfig.get_paths()["purelib"]]))
    out = subprocess.run([sys.executable, "-S", "-c",
                          "from vreloc_tf.config import resolve_config_path, load_config; "
                          "print(resolve_config_path('configs/tiny.yaml')); print(load_config('tiny').train.steps)"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path, steps = out.stdout.split()
    assert path == str(tmp_path / "site" / "vreloc_tf" / "configs" / "tiny.yaml") and int(steps) > 0
