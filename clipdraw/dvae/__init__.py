"""OpenAI's dVAE, frozen: the decoder (token scores and a relaxation in, an image in [0, 1] out)
and the encoder (an image in, token logits out).

    relaxation.py   the vocabulary softmax (the one copy), straight-through, softmax_backward
    conv.py         HeldConv2d: dall_e's convolution with its weights held once, in their dtype
    stages.py       the decoder regrouped into stages that also run the low-memory way
    low_memory.py   --low-memory: a bit per ReLU value kept, backward by hand, bands of rows
    decoder.py      DVAEDecoder: decode(scores, tau, relaxation, low_memory, compiler)
    encoder.py      DVAEEncoder: an image -> token logits (init images, edits)
"""

from .conv import HeldConv2d, hold_conv_weights
from .decoder import LOGIT_LAPLACE_EPS, DVAEDecoder, decoder_output_to_pixels
from .encoder import DVAEEncoder, map_pixels
from .relaxation import (RELAXATIONS, gumbel_noise, relaxed_tokens, softmax_backward, softmax_over_vocabulary,
                         straight_through)
from .stages import (InputConv, ReluConv, ResidualBlock, Stage, UpsampledBlock, Upsampling, decoder_stages,
                     run_stages)

__all__ = ["DVAEDecoder", "DVAEEncoder", "map_pixels", "HeldConv2d", "InputConv", "LOGIT_LAPLACE_EPS", "RELAXATIONS", "gumbel_noise", "ReluConv",
           "ResidualBlock", "Stage", "UpsampledBlock", "Upsampling", "decoder_output_to_pixels",
           "decoder_stages", "hold_conv_weights", "relaxed_tokens", "run_stages", "softmax_backward",
           "softmax_over_vocabulary", "straight_through"]
