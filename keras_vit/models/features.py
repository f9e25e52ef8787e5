"""Feature extraction: `forward_intermediates`, the per-block outputs of a
`ViTBackbone` as token sequences or patch feature maps (timm's
`forward_intermediates` is the model for it)."""

from keras import ops

from keras_vit.utils.validation import check_choice, strict_keywords

FEATURE_FORMATS = ("tokens", "maps")


class FeatureExtraction:
    """Mixin of `ViTBackbone`: needs its `blocks`, `norm`, `_embed`,
    `patch_size`, `stride` and `num_prefix_tokens`."""

    @strict_keywords()
    def forward_intermediates(self, images, indices=None, *, output="tokens", norm=False,
                              training=False):
        """Per-block outputs, for feature extraction and dense tasks.

        Args:
            images: (B, H, W, C) pixels as the model takes them.
            indices: None (every block), an int n (the last n blocks) or a
                list of block indices (negative counts from the end).
            output: "tokens" for (B, N, D) sequences with the prefix tokens,
                or "maps" for patch tokens as (B, h, w, D) feature maps.
            norm: bool, apply the final LayerNorm to each output.
            training: bool, run dropout and stochastic depth.

        Returns:
            A list with one tensor per selected block, in block order.
        """
        check_choice(output, "output", FEATURE_FORMATS)
        selected = self._block_indices(indices)
        x = self._embed(images)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x, training=training)
            if i in selected:
                y = self.norm(x) if norm and self.norm is not None else x
                outputs.append(self._to_map(y, images) if output == "maps" else y)
        return outputs

    def _block_indices(self, indices):
        depth = len(self.blocks)
        if indices is None:
            return set(range(depth))
        if isinstance(indices, int) and not isinstance(indices, bool):
            if not 1 <= indices <= depth:
                raise ValueError(f"`indices` as a count must be in [1, {depth}]. Received: indices={indices}")
            return set(range(depth - indices, depth))
        chosen = set()
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -depth <= i < depth:
                raise ValueError(
                    f"`indices` must hold block indices in [-{depth}, {depth - 1}]. Received: indices={indices!r}")
            chosen.add(i % depth)
        return chosen

    def _to_map(self, tokens, images):
        h, w = (
            (s - p) // st + 1 for s, p, st in zip(ops.shape(images)[1:3], self.patch_size, self.stride))
        patches = tokens[:, self.num_prefix_tokens:]
        return ops.reshape(patches, (ops.shape(tokens)[0], h, w, tokens.shape[-1]))
