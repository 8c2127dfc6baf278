// kcp-cri-clean stops and removes every pod sandbox of a CRI runtime, as the kubelet would on
// its way down: the runtime then runs the CNI DEL of each pod (veth, IP lease, iptables rules)
// and unmounts its network namespace. The node's teardown (node.sh) runs it once the kubelet is
// stopped, so nothing a pod created outlives the node. Usage: kcp-cri-clean UNIX-SOCKET-PATH
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kcp-cri-clean UNIX-SOCKET-PATH")
		os.Exit(2)
	}
	if err := clean(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "kcp-cri-clean:", err)
		os.Exit(1)
	}
}

func clean(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := runtime.NewRuntimeServiceClient(conn)
	pods, err := client.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("listing pod sandboxes: %w", err)
	}
	var failed error
	for _, pod := range pods.Items {
		name := pod.Metadata.Namespace + "/" + pod.Metadata.Name
		if _, err := client.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			failed = fmt.Errorf("stopping pod %s: %w", name, err)
			continue
		}
		if _, err := client.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			failed = fmt.Errorf("removing pod %s: %w", name, err)
			continue
		}
		fmt.Fprintln(os.Stderr, "kcp-cri-clean: removed pod", name)
	}
	return failed
}
