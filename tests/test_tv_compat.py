"""The torchvision shim lets open_clip and timm import on this CPU-only torch."""

import subprocess
import sys


def test_open_clip_and_timm_import_in_a_fresh_interpreter():
    code = (
        "import clipdistill, torch, open_clip, timm, torchvision.transforms as T\n"
        "from PIL import Image\n"
        "x = T.Compose([T.Resize(8), T.ToTensor()])(Image.new('RGB', (16, 16)))\n"
        "assert x.shape == (3, 8, 8)\n"
        "print(clipdistill._tv_compat.APPLIED == (torch.version.cuda is None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
