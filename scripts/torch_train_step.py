#!/usr/bin/env python3
"""PyTorch's side of scripts/bench-vs-pytorch.sh: whole training steps on the CPU (or CUDA).

The same rows as `cargo bench -p mpox-trainer --bench train_step`, on torchvision's networks:
forward, weighted cross-entropy, backward and an AdamW update for the classifiers (frozen stages
run under no_grad in eval mode, as the trainer's partial fine-tuning does), the DCGAN step
(discriminator update, then generator update, Adam with beta1 0.5, BCE on logits), and the
frozen-feature caching pass (an eval-mode forward of the whole backbone, no gradient).

Prints one tab-separated line per row: key, seconds per step (the best of the repetitions).
`--device cuda` runs on the GPU, waiting for its queue at the end of every timed step
(scripts/gpu-check.sh: the batch-64 rows, which run only when named in --only).
"""

import argparse
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def best_of(reps, f):
    f()  # warm-up: allocations, oneDNN primitive caches, cuDNN's algorithm choice
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def classifier(arch):
    if arch == "mobilenet_v2":
        net = torchvision.models.mobilenet_v2(num_classes=2)
        stages = list(net.features)
        return stages, net.classifier[1], 1280
    net = torchvision.models.resnet18(num_classes=2)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    return [stem] + blocks, net.fc, 512


def classifier_step(arch, size, batch, trainable):
    torch.manual_seed(0)
    stages, head, _ = classifier(arch)
    stages = [s.to(DEVICE) for s in stages]
    head = head.to(DEVICE)
    first = 0 if trainable is None else len(stages) - trainable
    frozen = nn.Sequential(*stages[:first]).eval()
    trained = nn.Sequential(*stages[first:]).train()
    for p in frozen.parameters():
        p.requires_grad_(False)
    params = list(trained.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=DEVICE)
    y = torch.arange(batch, device=DEVICE) % 2
    weights = torch.tensor([1.0, 1.5], device=DEVICE)

    def step():
        with torch.no_grad():
            f = frozen(x)
        feats = trained(f)
        logits = head(F.adaptive_avg_pool2d(feats, 1).flatten(1))
        loss = F.cross_entropy(logits, y, weight=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def caching_pass(arch, size, batch):
    torch.manual_seed(0)
    stages, _, _ = classifier(arch)
    net = nn.Sequential(*stages).eval().to(DEVICE)
    x = torch.randn(batch, 3, size, size, device=DEVICE)

    def step():
        with torch.no_grad():
            F.adaptive_avg_pool2d(net(x), 1)

    return step


def dcgan_step(batch, size=64, nz=100):
    torch.manual_seed(0)
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, 512, 4, 1, 0, bias=False), nn.BatchNorm2d(512), nn.ReLU(True),
        nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
        nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
        nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh(),
    ).to(DEVICE)
    d = nn.Sequential(
        nn.Conv2d(3, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
        nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
        nn.Conv2d(256, 512, 4, 2, 1, bias=False), nn.BatchNorm2d(512), nn.LeakyReLU(0.2, True),
        nn.Conv2d(512, 1, 4, 1, 0, bias=False),
    ).to(DEVICE)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.randn(batch, 3, size, size, device=DEVICE).clamp(-1, 1)

    def step():
        z = torch.randn(batch, nz, 1, 1, device=DEVICE)
        fake = g(z)
        d_real = d(real).flatten()
        d_fake = d(fake.detach()).flatten()
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-d(fake).flatten()).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated row keys (default: the CPU rows)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = p.parse_args()
    global DEVICE
    DEVICE = torch.device(a.device)
    torch.set_num_threads(a.threads)
    rows = {
        "mnv2-last5-224-16": lambda: classifier_step("mobilenet_v2", 224, 16, 5),
        "mnv2-all-224-16": lambda: classifier_step("mobilenet_v2", 224, 16, None),
        "mnv2-all-112-16": lambda: classifier_step("mobilenet_v2", 112, 16, None),
        "resnet18-all-112-16": lambda: classifier_step("resnet18", 112, 16, None),
        "resnet18-all-224-16": lambda: classifier_step("resnet18", 224, 16, None),
        "dcgan-64-64": lambda: dcgan_step(64),
        "dcgan-64-32": lambda: dcgan_step(32),
        "mnv2-cache-224-32": lambda: caching_pass("mobilenet_v2", 224, 32),
        "mnv2-all-224-64": lambda: classifier_step("mobilenet_v2", 224, 64, None),
        "resnet18-all-224-64": lambda: classifier_step("resnet18", 224, 64, None),
    }
    gpu_only = {"mnv2-all-224-64", "resnet18-all-224-64"}
    only = [k for k in a.only.split(",") if k]
    for key, make in rows.items():
        if (only and key not in only) or (not only and key in gpu_only):
            continue
        print(f"{key}\t{best_of(a.reps, make()):.4f}", flush=True)
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"# torch {torch.__version__}, {where}", file=sys.stderr)


if __name__ == "__main__":
    main()
