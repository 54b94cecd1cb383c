"""What-if replay: the cluster's recorded traffic replayed under candidate policy sets on the
simulated cluster (``saga replay``, ``/api/admin/whatif``, ``/console/whatif/``)."""
