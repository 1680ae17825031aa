// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_dma - stands in for a driver of a device with 32-bit DMA: on load it
 * allocates @total_mb MiB of coherent DMA memory in pieces of @chunk_kb KiB
 * for a platform device whose DMA mask is 32 bits, keeps all of it, and
 * checks that every piece lies wholly below 4 GiB.  When the balloon holds
 * most of the memory below 4 GiB, only an on-demand deflate can satisfy it.
 * The result goes to the kernel log:
 *   vbhp_dma: allocated 256 MiB in 256 chunks, all below 4 GiB, in 812 ms
 *   vbhp_dma: FAILED after 100 MiB: no memory for chunk 101 (1024 KiB)
 *   vbhp_dma: FAILED after 2 MiB: chunk 2 at 0x... (1024 KiB) is not below 4 GiB
 * and a failure frees what was allocated and fails the load (-ENOMEM, or
 * -EIO for memory above 4 GiB).  Unloading frees everything.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-mapping.h>
#include <linux/ktime.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/sizes.h>
#include <linux/slab.h>

#define VBHP_DMA_MAX_MB	4096	/* all a 32-bit device can address */
#define VBHP_DMA_MAX_KB	4096	/* order 10 on x86: the largest buddy block */
#define VBHP_DMA_MIN_KB	(PAGE_SIZE >> 10)

static unsigned int total_mb = 256;
module_param(total_mb, uint, 0444);
MODULE_PARM_DESC(total_mb,
		 "MiB of coherent DMA memory to allocate (default 256; valid 1-4096)");

static unsigned int chunk_kb = 1024;
module_param(chunk_kb, uint, 0444);
MODULE_PARM_DESC(chunk_kb,
		 "KiB per dma_alloc_coherent() call (default 1024; valid 4-4096, a multiple of 4)");

struct vbhp_dma_chunk {
	void *cpu;
	dma_addr_t dma;
	size_t size;
};

static struct platform_device *vbhp_dma_pdev;
static struct vbhp_dma_chunk *vbhp_dma_chunks;
static unsigned int vbhp_dma_nr;	/* chunks allocated so far */

static void vbhp_dma_free_all(void)
{
	struct vbhp_dma_chunk *c;

	while (vbhp_dma_nr) {
		c = &vbhp_dma_chunks[--vbhp_dma_nr];
		dma_free_coherent(&vbhp_dma_pdev->dev, c->size, c->cpu, c->dma);
	}
	kvfree(vbhp_dma_chunks);
	vbhp_dma_chunks = NULL;
}

/* Allocate the next chunk of at most @left bytes; 0, -ENOMEM or -EIO. */
static int vbhp_dma_alloc_one(u64 left)
{
	struct vbhp_dma_chunk *c = &vbhp_dma_chunks[vbhp_dma_nr];
	u64 done = ((u64)total_mb << 20) - left;

	c->size = min_t(u64, left, (u64)chunk_kb << 10);
	c->cpu = dma_alloc_coherent(&vbhp_dma_pdev->dev, c->size, &c->dma,
				    GFP_KERNEL | __GFP_NOWARN);
	if (!c->cpu) {
		pr_err("FAILED after %llu MiB: no memory for chunk %u (%zu KiB)\n",
		       done >> 20, vbhp_dma_nr + 1, c->size >> 10);
		return -ENOMEM;
	}
	vbhp_dma_nr++;
	if ((u64)c->dma + c->size > SZ_4G) {
		pr_err("FAILED after %llu MiB: chunk %u at %pad (%zu KiB) is not below 4 GiB\n",
		       done >> 20, vbhp_dma_nr, &c->dma, c->size >> 10);
		return -EIO;
	}
	return 0;
}

/* Allocate all @nr chunks, stopping at the first failure. */
static int vbhp_dma_alloc_all(unsigned int nr)
{
	u64 left = (u64)total_mb << 20;
	int err;

	while (vbhp_dma_nr < nr) {
		err = vbhp_dma_alloc_one(left);
		if (err)
			return err;
		left -= vbhp_dma_chunks[vbhp_dma_nr - 1].size;
	}
	return 0;
}

static bool vbhp_dma_params_ok(void)
{
	return total_mb && total_mb <= VBHP_DMA_MAX_MB &&
	       chunk_kb >= VBHP_DMA_MIN_KB && chunk_kb <= VBHP_DMA_MAX_KB &&
	       !(chunk_kb % VBHP_DMA_MIN_KB);
}

/* A platform device that can only address the low 4 GiB. */
static int vbhp_dma_register(void)
{
	int err;

	vbhp_dma_pdev = platform_device_register_simple(KBUILD_MODNAME,
							PLATFORM_DEVID_NONE,
							NULL, 0);
	if (IS_ERR(vbhp_dma_pdev))
		return PTR_ERR(vbhp_dma_pdev);
	err = dma_coerce_mask_and_coherent(&vbhp_dma_pdev->dev,
					   DMA_BIT_MASK(32));
	if (err) {
		pr_err("32-bit DMA mask refused: %d\n", err);
		platform_device_unregister(vbhp_dma_pdev);
	}
	return err;
}

static int __init vbhp_dma_init(void)
{
	unsigned int nr;
	ktime_t t0;
	int err;

	if (!vbhp_dma_params_ok()) {
		pr_err("total_mb=%u chunk_kb=%u invalid: total_mb 1-%u, chunk_kb %lu-%u in steps of %lu\n",
		       total_mb, chunk_kb, VBHP_DMA_MAX_MB, VBHP_DMA_MIN_KB,
		       VBHP_DMA_MAX_KB, VBHP_DMA_MIN_KB);
		return -EINVAL;
	}
	nr = DIV_ROUND_UP(total_mb << 10, chunk_kb);
	vbhp_dma_chunks = kvcalloc(nr, sizeof(*vbhp_dma_chunks), GFP_KERNEL);
	if (!vbhp_dma_chunks)
		return -ENOMEM;
	err = vbhp_dma_register();
	if (err) {
		kvfree(vbhp_dma_chunks);
		return err;
	}
	t0 = ktime_get();
	err = vbhp_dma_alloc_all(nr);
	if (err) {
		vbhp_dma_free_all();
		platform_device_unregister(vbhp_dma_pdev);
		return err;
	}
	pr_info("allocated %u MiB in %u chunks, all below 4 GiB, in %lld ms\n",
		total_mb, nr, ktime_ms_delta(ktime_get(), t0));
	return 0;
}
module_init(vbhp_dma_init);

static void __exit vbhp_dma_exit(void)
{
	vbhp_dma_free_all();
	platform_device_unregister(vbhp_dma_pdev);
}
module_exit(vbhp_dma_exit);

MODULE_DESCRIPTION("virtio_balloon_hp test: 32-bit coherent DMA allocations below 4 GiB");
MODULE_LICENSE("GPL");
