"""torch.fx adapters: find candidate nodes and splice in calls to sparsepass custom ops."""
