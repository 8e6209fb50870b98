// Turns an opened workflow's stage-2 nodes into a subgraph blueprint (subgraphs/<name>.json), as the frontend's own
// "Publish subgraph" does: convert the nodes to a subgraph, expose the widgets a user sets as inputs, serialize
// the one subgraph node with its definition. Run by scripts/build_example_workflows.py in the real frontend.
async ({workflow, types, name, description, category, searchAliases, inputLabels, exposed}) => {
  const app = window.app, graph = app.graph;
  await app.loadGraphData(workflow);
  const {subgraph, node} = graph.convertToSubgraph(new Set(graph.nodes.filter(n => types.includes(n.type))));
  for (const [type, widget] of exposed) {
    const target = subgraph.nodes.find(n => n.type === type);
    const slot = target.inputs.find(i => i.name === widget);
    subgraph.addInput(widget, slot.type).connect(slot, target);
  }
  for (const input of [...subgraph.inputs]) {
    if (inputLabels[input.name]) subgraph.renameInput(input, inputLabels[input.name]);  // the outer slot too
  }
  subgraph.name = name;
  subgraph.description = description;
  node.title = name;
  const {nodes, subgraphs} = app.canvas._serializeItems([node]);
  subgraphs[0].category = category;  // the node library's "Subgraph Blueprints/<category>"
  return {revision: 0, last_node_id: node.id, last_link_id: 0, nodes, links: [], version: 0.4,
          definitions: {subgraphs}, extra: {BlueprintDescription: description, BlueprintSearchAliases: searchAliases}};
}
