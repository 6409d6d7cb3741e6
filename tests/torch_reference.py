"""PyTorch reference networks with torchvision's module and parameter names (tests and benchmarks only).

torchvision cannot be installed next to the CPU torch build used here, so ResNet (BasicBlock, Bottleneck v1.5) and
VGG16 are written out. Without torch the module imports (its classes are then only defined, for test collection);
the tests that use it skip (``optional_torch.requires_torch``).
"""
from optional_torch import nn, torch  # torch, or stand-ins when it is missing

TORCH_RESNET_CONFIG = {  # block type, blocks per stage, width per group
    "resnet18": ("basic", (2, 2, 2, 2), 64),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 128),
}
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class TorchBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample, base_width):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class TorchBottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample, base_width):
        super().__init__()
        width = planes * base_width // 64
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class TorchResNet(nn.Module):
    def __init__(self, arch):
        super().__init__()
        kind, blocks_per_stage, base_width = TORCH_RESNET_CONFIG[arch]
        block = TorchBasicBlock if kind == "basic" else TorchBottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes * block.expansion))
            stage = [block(inplanes, planes, stride, downsample, base_width)]
            inplanes = planes * block.expansion
            stage += [block(inplanes, planes, 1, None, base_width) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, 1000)

    def forward(self, x):
        """Returns ([layer1, layer2, layer3, layer4], logits)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            stages.append(x)
        return stages, self.fc(torch.flatten(self.avgpool(x), 1))


class TorchVGG16(nn.Module):
    def __init__(self):
        super().__init__()
        layers, in_channels = [], 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))


def torch_tapped_features(features, x, taps):
    """Outputs of the modules of a torch ``features`` Sequential at the indices ``taps``."""
    outputs = []
    for index, module in enumerate(features):
        x = module(x)
        if index in taps:
            outputs.append(x)
    return outputs


def randomise_batchnorm(model, seed):
    """Random BN affine parameters and running statistics (torch init leaves them at 1/0/0/1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(size, generator=generator))
                module.num_batches_tracked.fill_(1234)
    return model.eval()
