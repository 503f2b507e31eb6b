"""SegTex (segmentation maps turned into textured faces): networks and losses so far.

`segmap_net` (stage segmap: three encoders, AdaIN fusion, 19-class decoder), `texture_net`
(stage texture: six encoders, gated fusion, mouth transform, blending, SPADE generator,
multiscale discriminator), `losses` (Eq. 3-10), `sizes` (paper and tiny). Not registered as
a generator yet: the stages, the dataset pipeline steps and the sampler come next.
"""
