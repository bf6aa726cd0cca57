"""Building blocks shared by the model families."""
from .activations import create_act_layer, get_act_layer
from .attention import EcaModule, SEModule, get_attn
from .conv_bn_act import ConvNormAct
from .drop import DropPath, drop_path, drop_path_rates
from .helpers import get_padding, make_divisible, to_2tuple
from .norm import BatchNormAct2d, FrozenBatchNorm2d, LayerNorm2d
from .padding import Conv2dSame, MaxPool2dSame, create_conv2d, pad_same
from .pooling import ClassifierHead, SelectAdaptivePool2d, create_classifier
from .weight_init import init_conv_bn, trunc_normal_

__all__ = [
    'create_act_layer', 'get_act_layer', 'EcaModule', 'SEModule', 'get_attn', 'ConvNormAct', 'DropPath', 'drop_path',
    'drop_path_rates', 'get_padding', 'make_divisible', 'to_2tuple', 'BatchNormAct2d', 'FrozenBatchNorm2d',
    'LayerNorm2d', 'Conv2dSame', 'MaxPool2dSame', 'create_conv2d', 'pad_same', 'ClassifierHead',
    'SelectAdaptivePool2d', 'create_classifier', 'init_conv_bn', 'trunc_normal_',
]
