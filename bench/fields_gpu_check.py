"""Device checks for the field engine: batched == one-by-one on CUDA, seed chunking, and the Tancik 2D setup."""
import json
import sys

from l335q.data.images import load_image, resize
from l335q.fields.engine import FieldConfig, fit_image, seed_chunk

out = {}
img = resize(load_image("sample:astronaut"), 64)
cfg = FieldConfig(encoding="gaussian", features=64, sigma=5.0, width=64, steps=100)
both = fit_image(img, cfg, [0, 1, 2], "cuda")
solo = [fit_image(img, cfg, [s], "cuda").train_psnr[0] for s in (0, 1, 2)]
out["batched_vs_solo_cuda"] = {"batched": both.train_psnr, "solo": solo,
                               "max_abs_diff_db": max(abs(a - b) for a, b in zip(both.train_psnr, solo))}
cpu = fit_image(img, cfg, [0], "cpu").train_psnr[0]
out["cuda_vs_cpu_db"] = abs(cpu - solo[0])
big = FieldConfig(width=256, steps=1)
out["chunk_512px_1000seeds"] = seed_chunk(big, 1000, 512 * 512, "cuda", 2)
print(json.dumps(out), flush=True)
# Tancik et al. 2D: 512² image, train on the 256² every-other pixels, 4 x 256 ReLU, m 256, σ 10, Adam 1e-3, 2000 steps
full = resize(load_image("sample:astronaut"), 512)
for enc in ("none", "posenc", "gaussian"):
    t = FieldConfig(encoding=enc, features=256, sigma=10.0, depth=4, width=256, lr=1e-3, steps=2000)
    r = fit_image(full, t, [0], "cuda", split="every-other")
    out[f"tancik_{enc}"] = {"train": r.train_psnr, "heldout": r.heldout_psnr, "seconds": round(r.seconds, 2)}
    print(json.dumps(out[f"tancik_{enc}"]), flush=True)
r = fit_image(full, FieldConfig(encoding="gaussian", sigma=10.0, steps=2000), list(range(8)), "cuda", split="every-other")
out["tancik_gaussian_8seeds"] = {"train": r.train_psnr, "heldout": r.heldout_psnr, "seconds": round(r.seconds, 2)}
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "gpu_check.json", "w"), indent=1)
print(json.dumps(out["tancik_gaussian_8seeds"]))
