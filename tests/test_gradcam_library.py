"""gradeclip's Grad-CAM equals pytorch-grad-cam's (an independent library) on the same layer (the
output of the second-to-last block = the tokens entering the last one) and the same score (the
cosine of the image embedding with the text embedding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gradeclip

pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (PyPI grad-cam) is a test dependency")
from pytorch_grad_cam import GradCAM  # noqa: E402


class ImageEmbedding(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_image(images)


class Cosine:
    """pytorch-grad-cam target: the cosine of one image's embedding with a text embedding."""

    def __init__(self, text):
        self.text = text

    def __call__(self, embedding):
        return F.cosine_similarity(embedding, self.text, dim=0)


class GridGradCAM(GradCAM):
    """Returns the map at the token grid instead of resizing it to the input (resize to the same size
    is the identity in OpenCV), so it compares with gradeclip's raw grid map."""

    def __init__(self, model, target_layers, grid):
        super().__init__(model=model, target_layers=target_layers, reshape_transform=self.tokens_to_grid)
        self.grid = grid

    def tokens_to_grid(self, tokens):
        b, _, d = tokens.shape
        return tokens[:, 1:].reshape(b, *self.grid, d).permute(0, 3, 1, 2)

    def get_target_width_height(self, input_tensor):
        return self.grid[1], self.grid[0]


@pytest.mark.parametrize("fixture,size", [("tiny_model", (32, 32)), pytest.param("vit_b32", (224, 224), marks=pytest.mark.slow)])
def test_gradcam_matches_pytorch_grad_cam(request, fixture, size):
    model = request.getfixturevalue(fixture)
    images = torch.randn(3, 3, *size)
    texts = F.normalize(torch.randn(2, model.visual.proj.shape[1]), dim=-1)
    ours = gradeclip.Explainer(model).explain_image(images, texts, method="gradcam").maps
    grid = ours.shape[-2:]
    layer = model.visual.transformer.resblocks[-2]
    with GridGradCAM(ImageEmbedding(model), [layer], tuple(grid)) as cam:
        for t in range(texts.shape[0]):
            theirs = torch.from_numpy(cam(input_tensor=images, targets=[Cosine(texts[t])] * images.shape[0]))
            # pytorch-grad-cam min-max normalises each map: (m − min) / (1e-7 + max)
            m = ours[:, t]
            m = m - m.amin(dim=(1, 2), keepdim=True)
            expected = m / (1e-7 + m.amax(dim=(1, 2), keepdim=True))
            torch.testing.assert_close(theirs, expected, atol=1e-3, rtol=1e-3)  # float32 sums of D terms, normalised
    assert all(not module._forward_hooks for module in model.modules())
